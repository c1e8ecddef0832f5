"""The Asterisk configuration is rendered from the same settings the Python side uses."""

from __future__ import annotations

import configparser
from pathlib import Path

from ari_app.ami import SUBSCRIBED_EVENTS
from common.prompts import load_prompts
from common.settings import load_settings, settings_override
from stack.render import InstancePaths, phones, render


def conf(path: Path) -> str:
    return path.read_text()


def test_rendered_configuration_matches_the_settings(tmp_path: Path) -> None:
    s = load_settings({"MADOGUCHI_SITE__DATA_DIR": str(tmp_path / "data")})
    s = settings_override(s, asterisk={"sip_port": 5999, "http_port": 8999, "ami_port": 5999})
    out = tmp_path / "etc"
    written = {p.name for p in render(s, out, InstancePaths("/srv/x", "/usr/lib/mods"))}
    assert {"pjsip.conf", "extensions.conf", "ari.conf", "http.conf", "manager.conf",
            "queues.conf", "rtp.conf", "musiconhold.conf", "asterisk.conf"} <= written
    for name in written:
        assert (out / name).stat().st_mode & 0o777 == 0o600  # credentials inside

    http = conf(out / "http.conf")
    assert "bindaddr=127.0.0.1" in http and "bindport=8999" in http
    ari = conf(out / "ari.conf")
    assert f"[{s.asterisk.ari_user}]" in ari and f"password={s.asterisk.ari_password}" in ari
    manager = conf(out / "manager.conf")
    assert f"secret={s.asterisk.ami_secret}" in manager and "bindaddr=127.0.0.1" in manager
    assert "deny=0.0.0.0/0.0.0.0" in manager
    # only the events the controller handles are sent (the rest costs it CPU for nothing)
    filters = [line for line in manager.splitlines() if line.startswith("eventfilter")]
    assert filters == [f"eventfilter(action(include),name({name}))="
                       for name in SUBSCRIBED_EVENTS]

    pjsip = conf(out / "pjsip.conf")
    assert "bind=127.0.0.1:5999" in pjsip
    assert "match=127.0.0.2" in pjsip and "type=identify" in pjsip
    assert "anonymous" not in pjsip.split("No anonymous endpoint")[1].lower()
    for phone in phones(s):
        assert f"[{phone.id}](phone-tpl)" in pjsip
        assert f"password={phone.password}" in pjsip

    ext = conf(out / "extensions.conf")
    for svc in s.services:
        for did in svc.dids:
            assert f"exten => {did},1" in ext
        assert f"mado-fallback,{svc.queue},1" in ext or not svc.dids
        assert f"Queue({svc.queue}," in ext
    assert f"Stasis({s.asterisk.ari_app},inbound)" in ext
    assert 'GotoIf($["${STASISSTATUS}" = "FAILED"]' in ext
    for name, spec in load_prompts().items():
        assert f"PROMPT_{name.upper()}={spec['fallback']}" in ext

    queues = configparser.ConfigParser(strict=False, interpolation=None)
    queues.read_string(conf(out / "queues.conf"))
    assert set(queues.sections()) == {"general"} | {svc.queue for svc in s.services}
    assert queues["citizens"]["strategy"] == "rrmemory"
    assert "unavailable" in queues["citizens"]["joinempty"]
    # every free operator takes a waiting caller at once, not one caller at a time
    assert queues["general"]["autofill"] == "yes"


def test_city_recording_replaces_the_fallback(tmp_path: Path) -> None:
    custom = tmp_path / "sounds"
    custom.mkdir()
    (custom / "greeting.wav").write_bytes(b"RIFF....WAVEfmt ")
    s = load_settings({"MADOGUCHI_SITE__DATA_DIR": str(tmp_path / "data"),
                       "MADOGUCHI_PROMPTS__CUSTOM_DIR": str(custom)})
    sounds = tmp_path / "inst-sounds"
    render(s, tmp_path / "etc", InstancePaths("/srv/x", "/m"), host_sounds_dir=sounds)
    ext = (tmp_path / "etc" / "extensions.conf").read_text()
    assert "PROMPT_GREETING=/srv/x/sounds/greeting" in ext
    assert (sounds / "greeting.wav").exists()
    assert "PROMPT_GOODBYE=vm-goodbye" in ext


def greet_entry(ext: str, queue: str) -> str:
    """The ``[mado-greet]`` lines of one queue."""
    section = ext.split("[mado-greet]", 1)[1].split("\n[", 1)[0]
    lines = section.splitlines()
    # the greeting is early media: the entry starts with Progress(), not an answer
    start = lines.index(f"exten => {queue},1,Progress()")
    entry = [lines[start]]
    for line in lines[start + 1:]:
        if not line.strip():
            continue
        if not line.startswith(" same =>") and not line.startswith(" ;"):
            break
        entry.append(line)
    return "\n".join(entry)


def test_greeting_and_survey_invitation_follow_each_service(tmp_path: Path) -> None:
    import dataclasses

    s = load_settings({"MADOGUCHI_SITE__DATA_DIR": str(tmp_path / "data")})
    base = s.services[0]
    s = dataclasses.replace(s, services=(
        dataclasses.replace(base, id="a", queue="qa", dids=("01",), survey="all"),
        dataclasses.replace(base, id="b", queue="qb", dids=("02",), survey="opt_in",
                            survey_digit="7"),
        dataclasses.replace(base, id="c", queue="qc", dids=("03",), survey="off"),
    ))
    render(s, tmp_path / "etc", InstancePaths("/srv/x", "/m"))
    ext = (tmp_path / "etc" / "extensions.conf").read_text()
    # in this order: the greeting unanswered, then the answer (without Answer()'s wait of
    # up to 500 ms for the caller's first media frame), told to the controller
    every = ["Playback(${PROMPT_GREETING},noanswer)", "UserEvent(MadoPrompt,prompt: greeting,",
             "Answer(,i)", "UserEvent(MadoAnswered)"]
    a, b, c = (greet_entry(ext, q) for q in ("qa", "qb", "qc"))
    for entry, then in ((a, "mado-queue,qa,1"), (b, "mado-invite-qb,s,1"),
                        (c, "mado-queue,qc,1")):
        assert all(part in entry for part in every), entry
        assert [entry.index(part) for part in every] == sorted(entry.index(p) for p in every)
        assert entry.rstrip().endswith(f"Goto({then})")
    assert "Set(MADO_SURVEY=1)" in a and "mado-invite" not in a
    assert "Goto(mado-invite-qb,s,1)" in b
    assert "MADO_SURVEY" not in c and "mado-invite" not in c
    # only the opt-in service has an invitation: the key during it sets the flag, any
    # other key or none goes on to the queue at once
    assert "[mado-invite-qa]" not in ext and "[mado-invite-qc]" not in ext
    invite = ext.split("[mado-invite-qb]", 1)[1].split("\n[", 1)[0]
    assert "exten => s,1,Background(${PROMPT_SURVEY_INVITE})" in invite
    assert "UserEvent(MadoPrompt,prompt: survey_invite,status: FINISHED,survey: ${MADO_SURVEY})" \
        in invite
    assert "exten => 7,1,Set(MADO_SURVEY=1)" in invite
    assert "exten => i,1,Goto(s,done)" in invite
    assert "Goto(mado-queue,qb,1)" in invite
