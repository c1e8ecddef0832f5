"""The Japanese voice (stack/voice.py) with the real Open JTalk on small texts, its
manifest (only a changed text is spoken again), the resampler, and how an instance's
sounds are installed (stack/render.py): the city's recording overrides its prompt, the
Japanese files go to sounds/ja, English callers keep the English core sounds."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from common.prompts import load_catalogue, load_prompts
from common.settings import load_settings
from stack import voice
from stack.render import ASTERISK_DATA, InstancePaths, host_view, render

CATALOGUE = """
[hello]
ja = "お電話ありがとうございます。"
en = "Thank you for calling."
fallback = "hello-world"

[bye]
ja = "さようなら。"
en = "Goodbye."
fallback = "vm-goodbye"

[voice]
speed = 1.0

[words]
"digits/3" = "さん"
"queue-thereare" = "ただいま、"
"""


def write_catalogue(path: Path, text: str = CATALOGUE) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def samples(path: Path) -> np.ndarray:
    return np.frombuffer(path.read_bytes(), dtype="<i2").astype(np.float64) / 32768


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, voice.BuildReport]:
    root = tmp_path_factory.mktemp("voice")
    catalogue = write_catalogue(root / "prompts.toml")
    return root / "build", catalogue, voice.build(root / "build", catalogue)


def test_every_text_is_spoken_in_both_formats(
        built: tuple[Path, Path, voice.BuildReport]) -> None:
    out, _catalogue, report = built
    assert sorted(report.generated) == ["prompts/bye", "prompts/hello", "words/digits/3",
                                        "words/queue-thereare"]
    for path in report.generated:
        wide, narrow = samples(out / f"{path}.sln16"), samples(out / f"{path}.sln")
        assert abs(wide.size - 2 * narrow.size) <= 2  # the same speech at 16 and 8 kHz
        assert 0.1 < narrow.size / 8000 < 5, path
        assert 0.05 < np.max(np.abs(narrow)) <= 0.9, path  # speech, never clipped
    # a sentence keeps a pause after its full stop; a piece of a sentence is tight
    hello = samples(out / "prompts/hello.sln")
    assert np.max(np.abs(hello[-int(0.3 * 8000):])) < 0.01
    three = samples(out / "words/digits/3.sln")
    # (Open JTalk leaves about 0.35 s of silence before the speech and after it)
    onset = np.flatnonzero(np.abs(three) > 0.01 * np.max(np.abs(three)))  # -40 dB
    assert onset[0] < 0.1 * 8000 and three.size - onset[-1] < 0.06 * 8000
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["files"]["prompts/hello"]["text"] == "お電話ありがとうございます。"
    assert manifest["engine"].startswith("pyopenjtalk-plus ")


def test_only_a_changed_text_is_spoken_again(tmp_path: Path) -> None:
    catalogue = write_catalogue(tmp_path / "prompts.toml")
    out = tmp_path / "build"
    voice.build(out, catalogue)
    before = {p: p.stat() for p in out.rglob("*.sln*")}

    again = voice.build(out, catalogue)
    assert again.generated == [] and len(again.kept) == 4

    write_catalogue(catalogue, CATALOGUE.replace("さようなら。", "また おかけください。"))
    changed = voice.build(out, catalogue)
    assert changed.generated == ["prompts/bye"] and changed.removed == []
    for path, stat in before.items():
        same = path.stat()
        if path.stem == "bye":
            assert same.st_ino != stat.st_ino  # a new file, written atomically
        else:  # untouched: not even rewritten
            assert (same.st_ino, same.st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns), path

    # a text no longer listed leaves no file; a new voice speaks everything again
    write_catalogue(catalogue, CATALOGUE.split("[bye]")[0] + CATALOGUE.split("vm-goodbye\"")[1]
                    .replace("speed = 1.0", "speed = 1.1"))
    rebuilt = voice.build(out, catalogue)
    assert rebuilt.removed == ["prompts/bye"]
    assert not list(out.glob("prompts/bye.*"))
    assert sorted(rebuilt.generated) == ["prompts/hello", "words/digits/3",
                                         "words/queue-thereare"]


def test_resampling_filters_before_it_decimates() -> None:
    rate = 48000
    t = np.arange(rate) / rate
    for target in (8000, 16000):
        band = target / 2
        kept = voice.resample(np.sin(2 * np.pi * 0.8 * band * t), rate, target)[400:-400]
        # dropping samples would fold this tone above the new Nyquist frequency back
        # into the band at full strength
        folded = voice.resample(np.sin(2 * np.pi * 1.25 * band * t), rate, target)[400:-400]
        assert kept.size == target - 800
        assert abs(np.sqrt(2 * np.mean(kept ** 2)) - 1) < 0.01
        assert np.sqrt(2 * np.mean(folded ** 2)) < 10 ** (-70 / 20)
    with pytest.raises(ValueError, match="whole factor"):
        voice.resample(np.zeros(10), 44100, 16000)


def test_the_shipped_catalogue_covers_what_asterisk_plays_in_japanese() -> None:
    catalogue = load_catalogue()
    assert set(catalogue.prompts) == set(load_prompts())
    assert "voice" not in catalogue.prompts and "words" not in catalogue.prompts
    words = set(catalogue.words)
    # app_queue's position and hold-time announcements (apps/app_queue.c say_position)
    assert {"queue-youarenext", "queue-thereare", "queue-callswaiting", "queue-holdtime",
            "queue-minute", "queue-minutes", "queue-seconds", "queue-thankyou",
            "queue-quantity1", "queue-quantity2", "queue-reporthold"} <= words
    # main/say.c ast_say_number_full_ja: 0-19, the tens, hundred, thousand, million
    numbers = {f"digits/{n}" for n in [*range(20), *range(20, 100, 10)]}
    assert numbers | {"digits/hundred", "digits/thousand", "digits/million",
                      "digits/minus"} <= words
    assert all(spec["ja"] for spec in catalogue.prompts.values())


def test_a_malformed_catalogue_names_the_entry(tmp_path: Path) -> None:
    bad = write_catalogue(tmp_path / "p.toml", '[greeting]\nen = "Hello"\nfallback = "x"\n')
    with pytest.raises(ValueError, match=r"\[greeting\] needs"):
        load_catalogue(bad)
    bad = write_catalogue(tmp_path / "q.toml", '[words]\n"../etc/x" = "あ"\n')
    with pytest.raises(ValueError, match="words"):
        load_catalogue(bad)


def fake_asterisk_root(root: Path) -> Path:
    """Debian's layout: sounds/en is a link through /etc/alternatives."""
    data = root / ASTERISK_DATA.lstrip("/")
    allison = data / "sounds" / "en_US_f_Allison"
    allison.mkdir(parents=True)
    for name in ("hello-world", "vm-goodbye", "queue-thereare"):
        (allison / f"{name}.gsm").write_bytes(b"gsm")
    (root / "etc" / "alternatives").mkdir(parents=True)
    (root / "etc" / "alternatives" / "asterisk-prompt-en").symlink_to(
        f"{ASTERISK_DATA}/sounds/en_US_f_Allison")
    (data / "sounds" / "en").symlink_to("/etc/alternatives/asterisk-prompt-en")
    (data / "documentation").mkdir()
    return root


def test_an_instance_gets_japanese_files_and_the_citys_recording_wins(
        tmp_path: Path, built: tuple[Path, Path, voice.BuildReport]) -> None:
    out, _catalogue, _report = built
    custom = tmp_path / "custom"
    custom.mkdir()
    (custom / "greeting.wav").write_bytes(b"RIFF....WAVEfmt ")
    s = load_settings({"MADOGUCHI_SITE__DATA_DIR": str(tmp_path / "data"),
                       "MADOGUCHI_PROMPTS__CUSTOM_DIR": str(custom)})
    root = fake_asterisk_root(tmp_path / "root")
    assert host_view(root, f"{ASTERISK_DATA}/sounds/en") == \
        root / ASTERISK_DATA.lstrip("/") / "sounds" / "en_US_f_Allison"
    # a build with every prompt of the catalogue: the small one's files, copied
    full = tmp_path / "voice"
    (full / "prompts").mkdir(parents=True)
    for name in load_prompts():
        for ext in voice.FORMATS:
            (full / "prompts" / f"{name}.{ext}").write_bytes(
                (out / "prompts" / f"hello.{ext}").read_bytes())
    (full / "words").symlink_to(out / "words")

    instance = tmp_path / "instance"
    sounds = instance / "sounds"
    paths = InstancePaths("/srv/x", "/m")
    render(s, instance / "etc", paths, host_sounds_dir=sounds, voice_dir=full,
           asterisk_root=root)
    ext = (instance / "etc" / "extensions.conf").read_text()
    assert "PROMPT_GREETING=/srv/x/sounds/greeting" in ext
    assert "PROMPT_GOODBYE=/srv/x/sounds/goodbye" in ext
    # the recording, for every caller; no Japanese synthesis beside it to win over it
    assert (sounds / "greeting.wav").is_file()
    assert not list(sounds.glob("ja/greeting.*")) and not list(sounds.glob("en/greeting.*"))
    # a prompt without a recording: Japanese for ja channels, the core sound for en ones
    assert sorted(p.name for p in sounds.glob("ja/goodbye.*")) == ["goodbye.sln",
                                                                     "goodbye.sln16"]
    assert [(p.name, str(p.readlink())) for p in sounds.glob("en/goodbye.*")] == [
        ("goodbye.gsm", f"{ASTERISK_DATA}/sounds/en/vm-goodbye.gsm")]
    # Asterisk's own files: the instance's data folder, its package's linked, ja added
    data = instance / "data"
    assert (data / "documentation").readlink() == Path(f"{ASTERISK_DATA}/documentation")
    assert (data / "sounds" / "en").readlink() == Path(f"{ASTERISK_DATA}/sounds/en")
    assert (data / "sounds" / "ja" / "digits" / "3.sln").is_file()
    assert (data / "sounds" / "ja" / "queue-thereare.sln16").is_file()
    conf = (instance / "etc" / "asterisk.conf").read_text()
    assert "astdatadir => /srv/x/data" in conf and "defaultlanguage = ja" in conf
    pjsip = (instance / "etc" / "pjsip.conf").read_text()
    assert pjsip.count("language=ja") == 2  # the trunk and the phones' template

    # the recording is withdrawn: the next render installs the Japanese voice instead
    (custom / "greeting.wav").unlink()
    render(s, instance / "etc", paths, host_sounds_dir=sounds, voice_dir=full,
           asterisk_root=root)
    assert not (sounds / "greeting.wav").exists()
    assert sorted(p.name for p in sounds.glob("ja/greeting.*")) == ["greeting.sln",
                                                                      "greeting.sln16"]


def test_without_the_voice_everything_stays_as_it_was(tmp_path: Path) -> None:
    s = load_settings({"MADOGUCHI_SITE__DATA_DIR": str(tmp_path / "data"),
                       "MADOGUCHI_PROMPTS__CUSTOM_DIR": str(tmp_path / "none")})
    instance = tmp_path / "instance"
    render(s, instance / "etc", InstancePaths("/srv/x", "/m"),
           host_sounds_dir=instance / "sounds")
    ext = (instance / "etc" / "extensions.conf").read_text()
    for name, spec in load_prompts().items():
        assert f"PROMPT_{name.upper()}={spec['fallback']}" in ext
    assert f"astdatadir => {ASTERISK_DATA}" in (instance / "etc" / "asterisk.conf").read_text()
    assert not (instance / "data").exists()


def test_the_hours_are_read_out_from_each_services_settings() -> None:
    from common.prompts import plain_text, service_texts, spoken_clock, spoken_hours

    city = dataclasses.replace(load_settings().services[0], id="juminhyo")
    assert spoken_hours(city) == "祝日と年末年始を除く平日の午前8時30分から午後5時15分まで"
    saturday = dataclasses.replace(city, id="s",
                       open_days=("mon", "tue", "wed", "thu", "fri", "sat"),
                       open_time="09:00", close_time="12:00", closed_on_holidays=False,
                       closed_dates=("08-15",))
    assert spoken_hours(saturday) == "8月15日を除く月曜日から土曜日の午前9時から正午まで"
    always = dataclasses.replace(city, id="a", open_time="00:00",
                     close_time="24:00", open_days=("mon", "tue", "wed", "thu", "fri",
                                                    "sat", "sun"),
                     closed_on_holidays=False, closed_dates=())
    assert spoken_hours(always) == "毎日、24時間"
    some = dataclasses.replace(always, open_days=("tue", "thu"), open_time="12:30",
                               close_time="19:00")
    assert spoken_hours(some) == "火曜日、木曜日の午後0時30分から午後7時まで"
    assert spoken_clock("00:00") == "午前0時"

    prompts = load_prompts()
    texts = service_texts(prompts, (city, saturday))
    assert set(texts) == {"out_of_hours__juminhyo", "out_of_hours__s"}
    assert "受付時間は、祝日と年末年始を除く平日の午前8時30分から午後5時15分までです。" \
        in texts["out_of_hours__juminhyo"]
    # for a caller of no service, without the sentence that needs one
    assert plain_text(prompts["out_of_hours"]["ja"]) == \
        "ただいま受付時間外です。お手数ですが、受付時間内におかけ直しください。"


def test_each_service_hears_its_own_hours_and_the_citys_recording_wins(
        tmp_path: Path, built: tuple[Path, Path, voice.BuildReport]) -> None:
    """The per-service texts are synthesised beside the catalogue's, kept when another
    configuration builds into the same folder, and installed under the service's name;
    a recording for one service, or for every service, replaces the synthesis."""
    out, _catalogue, _report = built
    s = load_settings({"MADOGUCHI_SITE__DATA_DIR": str(tmp_path / "data"),
                       "MADOGUCHI_PROMPTS__CUSTOM_DIR": str(tmp_path / "custom")})
    first, other = s.services[0], dataclasses.replace(s.services[0], close_time="16:00")
    catalogue = write_catalogue(tmp_path / "prompts.toml", CATALOGUE + (
        '[out_of_hours]\nja = "受付時間外です。受付時間は、{hours}です。"\n'
        'fallback = "please-try-call-later"\n'))
    build = tmp_path / "build"
    report = voice.build(build, catalogue, services=(first,))
    said = [p for p in report.generated if p.startswith("said/")]
    assert len(said) == 1
    manifest = json.loads((build / "manifest.json").read_text())
    assert manifest["files"]["prompts/out_of_hours"]["text"] == "受付時間外です。"
    assert "午後5時15分まで" in manifest["files"][said[0]]["text"]
    # another configuration (other hours) in the same folder: both files stay
    again = voice.build(build, catalogue, services=(other,))
    assert len(again.generated) == 1 and again.removed == []
    assert all((build / f"{path}.sln").is_file() for path in said + again.generated)
    assert voice.build(build, catalogue).removed == []  # nor a build without services

    # the shipped catalogue rendered with a voice folder holding what it needs
    full = tmp_path / "voice"
    (full / "prompts").mkdir(parents=True)
    (full / "said").mkdir()
    from common.prompts import said_name, service_texts
    for name in load_prompts():
        for ext in voice.FORMATS:
            (full / "prompts" / f"{name}.{ext}").write_bytes(b"\0\0")
    for text in service_texts(load_prompts(), s.services).values():
        for ext in voice.FORMATS:
            (full / f"{said_name(text)}.{ext}").write_bytes(text.encode())
    instance, paths = tmp_path / "instance", InstancePaths("/srv/x", "/m")
    sounds = instance / "sounds"
    key = f"out_of_hours__{first.id}"
    render(s, instance / "etc", paths, host_sounds_dir=sounds, voice_dir=full)
    ext = (instance / "etc" / "extensions.conf").read_text()
    assert f"PROMPT_OUT_OF_HOURS__{first.id.upper()}=/srv/x/sounds/{key}" in ext
    assert "PROMPT_OUT_OF_HOURS=/srv/x/sounds/out_of_hours" in ext
    assert "午前8時30分" in (sounds / "ja" / f"{key}.sln").read_text()
    assert (sounds / "en" / f"{key}.gsm").readlink() == \
        Path(f"{ASTERISK_DATA}/sounds/en/please-try-call-later.gsm")

    custom = tmp_path / "custom"
    custom.mkdir()
    (custom / f"out_of_hours-{first.id}.wav").write_bytes(b"RIFF")
    render(s, instance / "etc", paths, host_sounds_dir=sounds, voice_dir=full)
    assert (sounds / f"{key}.wav").is_file() and not list(sounds.glob(f"ja/{key}.*"))
    (custom / f"out_of_hours-{first.id}.wav").unlink()
    (custom / "out_of_hours.wav").write_bytes(b"RIFF")  # one recording for everyone
    render(s, instance / "etc", paths, host_sounds_dir=sounds, voice_dir=full)
    ext = (instance / "etc" / "extensions.conf").read_text()
    assert "PROMPT_OUT_OF_HOURS__" not in ext and not list(sounds.rglob(f"{key}.*"))
