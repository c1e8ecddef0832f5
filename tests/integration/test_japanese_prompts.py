"""Japanese callers hear Japanese: the synthesised greeting, then app_queue's position and
expected-wait announcements built from the Japanese words (sounds/ja), in app_queue's
order, with music on hold between them. Read from Asterisk's own log (its verbose
"Playing '<file>.<format>' (language 'ja')" lines): the Japanese files are signed
linear, the English core sounds GSM, so the format says which one played."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from common.commands import AgentLogin
from common.settings import Settings
from stack.asterisk import AsteriskInstance
from tests.conftest import wait_until
from tests.integration.conftest import Proc, hang_up, run_sipp, send, start_phones
from tests.integration.test_queue import members

pytestmark = [pytest.mark.asterisk, pytest.mark.engine("sqlite")]

DID = "0312345678"
FIRST, SECOND = "0901000001", "0901000002"

LINE = re.compile(r"^\[(?P<at>[^\]]+)\] VERBOSE\[[^\]]*\](?:\[[^\]]*\])? [\w.]+: (?P<text>.*)$")
PLAYING = re.compile(r"<(?P<chan>[^>]+)> Playing '(?P<file>[^']+)\.(?P<fmt>\w+)' "
                     r"\(language '(?P<lang>[^']*)'\)")
MOH_ON = re.compile(r"Started music on hold, class '[^']*', on channel '(?P<chan>[^']+)'")
MOH_OFF = re.compile(r"Stopped music on hold on (?P<chan>\S+)")


@dataclass
class Heard:
    at: datetime
    what: str  # a sound file, or "moh-on" / "moh-off"
    fmt: str = ""
    lang: str = ""


def heard(asterisk: AsteriskInstance, offset: int, channel: str) -> list[Heard]:
    """What ``channel`` played since ``offset`` of the full log, in order."""
    with asterisk.full_log.open("rb") as fh:
        fh.seek(offset)
        text = fh.read().decode(errors="replace")
    out = []
    for line in text.splitlines():
        found = LINE.match(line)
        if not found:
            continue
        at = datetime.strptime(found["at"], "%Y-%m-%d %H:%M:%S.%f")
        body = found["text"]
        if (m := PLAYING.search(body)) and m["chan"] == channel:
            out.append(Heard(at, m["file"], m["fmt"], m["lang"]))
        elif (m := MOH_ON.search(body)) and m["chan"] == channel:
            out.append(Heard(at, "moh-on"))
        elif (m := MOH_OFF.search(body)) and m["chan"] == channel:
            out.append(Heard(at, "moh-off"))
    return out


def channel_of(settings: Settings, caller: str) -> dict[str, str]:
    """The trunk channel of ``caller`` (ARI lists every channel, not only Stasis ones)."""
    ast = settings.asterisk
    found = [c for c in httpx.get(f"{ast.ari_url}/channels", auth=(ast.ari_user, ast.ari_password),
                                  timeout=5).json()
             if c["caller"]["number"] == caller and c["name"].startswith("PJSIP/carrier-")]
    return found[0] if found else {}


def language(settings: Settings, channel_id: str) -> str:
    ast = settings.asterisk
    resp = httpx.get(f"{ast.ari_url}/channels/{channel_id}/variable",
                     params={"variable": "CHANNEL(language)"},
                     auth=(ast.ari_user, ast.ari_password), timeout=5)
    return str(resp.json()["value"])


def files(events: list[Heard]) -> list[str]:
    return [e.what for e in events if not e.what.startswith("moh-")]


def test_queue_announcements_are_japanese_in_order_with_music_between(
        asterisk: AsteriskInstance, ari_app: Proc, call_settings: Settings,
        tmp_path: Path) -> None:
    offset = asterisk.full_log.stat().st_size
    phones = start_phones(call_settings, ["op01"], tmp_path / "phones")
    callers: list[subprocess.Popen[str]] = []
    try:
        assert send(call_settings, AgentLogin(tenant="city", endpoint="op01",
                                              queues=["citizens"]))["ok"]
        wait_until(lambda: "op01" in members(call_settings), 10, "op01 not logged in")
        # the only operator is busy (on another call): callers wait
        asterisk.cli("channel originate PJSIP/op01 application Echo")
        wait_until(lambda: "(In use)" in asterisk.cli("queue show citizens"), 10,
                   f"op01 not busy: {asterisk.cli('queue show citizens')}")

        def call(number: str) -> dict[str, str]:
            proc = run_sipp(call_settings, "uac_hangup_on_cue.xml", DID, tmp_path / number,
                            duration_ms=60000, background=True,
                            keys={"caller": number, "rtp_port": "4000"})
            assert isinstance(proc, subprocess.Popen)
            callers.append(proc)
            chan = wait_until(lambda: channel_of(call_settings, number), 10,
                              f"{number} did not reach Asterisk")
            # greeted: in line behind anyone who called before
            wait_until(lambda: any(e.what.endswith("/sounds/greeting")
                                   for e in heard(asterisk, offset, chan["name"])), 10,
                       f"{number} not greeted")
            return chan

        first, second = call(FIRST), call(SECOND)
        assert language(call_settings, second["id"]) == "ja"
        assert language(call_settings, first["id"]) == "ja"

        # position 1 hears that it is next; position 2 its place and the expected wait
        def announced(chan: dict[str, str]) -> bool:
            """The announcement ended and the music is back."""
            events = heard(asterisk, offset, chan["name"])
            ends = [i for i, e in enumerate(events) if e.what == "queue-thankyou"]
            return bool(ends) and any(e.what == "moh-on" for e in events[ends[-1]:])

        wait_until(lambda: announced(first), 30, "no announcement for the first caller")
        wait_until(lambda: announced(second), 30, "no announcement for the second caller")
        # the first caller gives up: the second moves to the front and is told so at the
        # next announcement (app_queue: 15 s after the previous one began), music until then
        hang_up(callers[0])
        assert callers[0].wait(10) == 0
        wait_until(lambda: files(heard(asterisk, offset, second["name"])).count(
            "queue-thankyou") == 2, 30, "the second caller was not told it is next")

        one = heard(asterisk, offset, first["name"])
        two = heard(asterisk, offset, second["name"])
    finally:
        for proc in callers[1:]:
            hang_up(proc)
        phones.stop()

    # every file in Japanese: the channel's language, and the synthesised signed linear
    # files (8 kHz for these G.711 callers), not the English core sounds (GSM)
    for event in one + two:
        if not event.what.startswith("moh-"):
            assert (event.lang, event.fmt) == ("ja", "slin"), event
    greeting = f"{asterisk.paths.sounds}/greeting"
    assert files(one) == [greeting, "queue-youarenext", "queue-thankyou"], files(one)

    said = " ".join(files(two))
    first_time = (r"queue-thereare digits/2 queue-callswaiting"
                  r"( queue-holdtime( digits/\d+)+ queue-(minute|minutes|seconds)"
                  r"(( digits/\d+)+ queue-seconds)?)? queue-thankyou")
    assert re.fullmatch(rf"{re.escape(greeting)} {first_time} queue-youarenext queue-thankyou",
                        said), said
    assert "queue-holdtime" in said  # said once, at the first announcement

    # music on hold while waiting, stopped for each announcement and started again after
    kinds = [e.what if e.what.startswith("moh-") else "say" for e in two]
    squeezed = [k for i, k in enumerate(kinds) if i == 0 or k != kinds[i - 1]]
    assert squeezed[squeezed.index("moh-on"):] == [
        "moh-on", "moh-off", "say", "moh-on", "moh-off", "say"], kinds
    ends = [i for i, e in enumerate(two) if e.what == "queue-thankyou"]
    between = [e for e in two[ends[0]:] if e.what.startswith("moh-")]
    music = (between[1].at - between[0].at).total_seconds()
    assert between[0].what == "moh-on" and between[1].what == "moh-off" and music > 2, between
