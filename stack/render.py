"""Render Asterisk's configuration from the project's settings (Jinja2).

The same templates serve development, tests and production, so queue names,
extensions, ports and credentials never disagree between Asterisk and Python.

    python -m stack.render OUT_DIR [--base /etc/asterisk-instance] [--moddir DIR]
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import jinja2

from ari_app.ami import SUBSCRIBED_EVENTS
from common.prompts import load_prompts, said_name, service_texts
from common.settings import (
    PROJECT_ROOT,
    Settings,
    SettingsError,
    load_settings,
    staff_endpoint,
    trunk_calls,
)
from stack import voice

logger = logging.getLogger(__name__)

TEMPLATES = PROJECT_ROOT / "asterisk" / "templates"
SOUND_EXTENSIONS = (".wav", ".gsm", ".ulaw", ".alaw", ".sln", ".sln16")
#: Asterisk's package data folder (astdatadir of Debian's asterisk), as Asterisk sees it
ASTERISK_DATA = "/usr/share/asterisk"
# what an instance's own data folder links to when the package's cannot be listed here
# (rendering in a container without Asterisk): the entries of Debian's package
PACKAGE_DATA_ENTRIES = ("agi-bin", "conf", "documentation", "firmware", "images", "keys",
                        "moh", "phoneprov", "rest-api", "static-http")
PACKAGE_SOUND_ENTRIES = ("custom", "en", "en_US", "en_US_f_Allison", "priv-callerintros",
                         "recordings")
# formats a core sound may come in (the English links of a prompt; missing ones dangle,
# which Asterisk ignores)
CORE_SOUND_FORMATS = ("gsm", "ulaw", "alaw", "wav", "g722", "sln16")


@dataclass(frozen=True)
class InstancePaths:
    """Folders of one Asterisk instance, as Asterisk itself sees them."""

    base: str
    moddir: str

    @property
    def sounds(self) -> str:
        return f"{self.base}/sounds"

    @property
    def data(self) -> str:
        """The instance's own astdatadir: the package's, plus the Japanese sounds/ja."""
        return f"{self.base}/data"


@dataclass(frozen=True)
class Phone:
    id: str
    extension: str
    label: str
    context: str
    password: str
    kind: str  # operator | staff
    department: str = ""


def phones(settings: Settings) -> list[Phone]:
    out = [
        Phone(id=ep, extension=ext, label=f"Operator {ext}", context="from-phones",
              password=settings.asterisk.phone_password(ep), kind="operator")
        for ep, ext in settings.operators.endpoints()
    ]
    for dep in settings.departments:
        for ext in dep.extensions:
            ep = staff_endpoint(ext)
            out.append(Phone(id=ep, extension=ext, label=f"{dep.name_en or dep.id} {ext}",
                             context="from-phones",
                             password=settings.asterisk.phone_password(ep), kind="staff",
                             department=dep.id))
    return out


def _place(source: Path, target: Path) -> None:
    """A hard link where the file system allows (instant, no copy), else a copy."""
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _symlink(target: str, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(target)


def host_view(root: Path, inner: str) -> Path:
    """``inner``, a path as Asterisk sees it in its root file system ``root``, as the host
    sees it: symbolic links are followed inside ``root`` (Debian's sounds/en is one,
    through /etc/alternatives), so a chrooted Asterisk's folders can be listed."""
    parts = [p for p in inner.split("/") if p]
    here = root
    for _ in range(64):  # links followed at most
        while parts and not (here / parts[0]).is_symlink():
            here = here / parts.pop(0)
        if not parts:
            return here
        target = os.readlink(here / parts.pop(0))
        if target.startswith("/"):
            here = root
        parts = [p for p in target.split("/") if p] + parts
    raise OSError(f"too many levels of symbolic links in {inner} under {root}")


def prompt_refs(settings: Settings, paths: InstancePaths, host_sounds_dir: Path | None,
                voice_dir: Path | None = None,
                asterisk_root: Path | None = None) -> dict[str, str]:
    """Map each prompt to what Asterisk plays, and install its files into
    ``host_sounds_dir`` (the instance's sound folder as the host sees it) when given:

    - the city's recording in ``prompts.custom_dir``: ``sounds/<name>.<ext>``, for every
      caller (as before the Japanese voice);
    - else, with the synthesised prompts (``voice_dir``, stack.voice): ``sounds/ja/`` for
      Japanese channels and, for English ones, ``sounds/en/<name>.<ext>`` linked to the
      English core sound of ``fallback``; Asterisk picks by the channel's language;
    - else (nothing installed) the core sound's name, in every language.

    A prompt said per service (common.prompts.service_texts: out_of_hours with the
    hours) gets one more entry per service, ``<name>__<service>``: the city's recording
    ``<name>-<service id>.<ext>``, else its synthesised text; none where the city
    recorded the prompt for everyone (that recording is played) or nothing is voiced.
    """
    custom = Path(settings.prompts.custom_dir)
    if not custom.is_absolute():
        custom = PROJECT_ROOT / custom
    refs: dict[str, str] = {}
    prompts = load_prompts()
    for name, prompt in prompts.items():
        recording = next((custom / f"{name}{ext}" for ext in SOUND_EXTENSIONS
                          if (custom / f"{name}{ext}").is_file()), None)
        voiced = sorted(voice_dir.joinpath("prompts").glob(f"{name}.*")) if voice_dir else []
        if host_sounds_dir is None or (recording is None and not voiced):
            refs[name] = prompt["fallback"]
            continue
        for folder in (host_sounds_dir, host_sounds_dir / "ja", host_sounds_dir / "en"):
            for old in folder.glob(f"{name}.*"):  # a re-render: no other version may win
                old.unlink()
        refs[name] = f"{paths.sounds}/{name}"
        if recording is not None:
            _place(recording, host_sounds_dir / recording.name)
            continue
        _install_voiced(name, voiced, prompt["fallback"], host_sounds_dir, asterisk_root)
    for service in settings.services:
        for key, text in service_texts(prompts, (service,)).items():
            name = key.split("__", 1)[0]
            if host_sounds_dir is None or refs[name] == prompts[name]["fallback"]:
                continue  # nothing installed: the core sound for everyone
            for folder in (host_sounds_dir, host_sounds_dir / "ja", host_sounds_dir / "en"):
                for old in folder.glob(f"{key}.*"):
                    old.unlink()
            recording = next((custom / f"{name}-{service.id}{ext}"
                              for ext in SOUND_EXTENSIONS
                              if (custom / f"{name}-{service.id}{ext}").is_file()), None)
            voiced = sorted(voice_dir.glob(f"{said_name(text)}.*")) if voice_dir else []
            if recording is not None:
                _place(recording, host_sounds_dir / f"{key}{recording.suffix}")
            elif voiced and not list(host_sounds_dir.glob(f"{name}.*")):
                # (a recording of the prompt for everyone wins over the synthesis)
                _install_voiced(key, voiced, prompts[name]["fallback"], host_sounds_dir,
                                asterisk_root)
            else:
                continue
            refs[key] = f"{paths.sounds}/{key}"
    return refs


def _install_voiced(name: str, voiced: list[Path], fallback: str, host_sounds_dir: Path,
                    asterisk_root: Path | None) -> None:
    """``sounds/ja/<name>.*`` from the synthesised files, ``sounds/en/<name>.*`` linked to
    the English core sound ``fallback``."""
    for synthesised in voiced:
        _place(synthesised, host_sounds_dir / "ja" / f"{name}{synthesised.suffix}")
    core = (host_view(asterisk_root, f"{ASTERISK_DATA}/sounds/en")
            if asterisk_root is not None else None)
    formats = ([p.suffix[1:] for p in sorted(core.glob(f"{fallback}.*"))]
               if core is not None and core.is_dir() else CORE_SOUND_FORMATS)
    for ext in formats:
        _symlink(f"{ASTERISK_DATA}/sounds/en/{fallback}.{ext}",
                 host_sounds_dir / "en" / f"{name}.{ext}")


def install_data(host_data_dir: Path, voice_dir: Path, asterisk_root: Path | None) -> None:
    """The instance's own astdatadir: every entry of Asterisk's package data folder
    linked, and ``sounds/ja`` with the synthesised Japanese words (the numbers of
    say.c, app_queue's announcements; stack.voice), so Japanese channels hear Japanese
    where Asterisk builds sentences itself and English ones the core sounds as before."""
    if host_data_dir.exists():
        shutil.rmtree(host_data_dir)

    def entries(folder: str, fallback: tuple[str, ...]) -> list[str]:
        here = host_view(asterisk_root, folder) if asterisk_root is not None else None
        if here is not None and here.is_dir():
            return sorted(p.name for p in here.iterdir())
        return list(fallback)

    for entry in entries(ASTERISK_DATA, PACKAGE_DATA_ENTRIES):
        if entry != "sounds":
            _symlink(f"{ASTERISK_DATA}/{entry}", host_data_dir / entry)
    for entry in entries(f"{ASTERISK_DATA}/sounds", PACKAGE_SOUND_ENTRIES):
        if entry != "ja":
            _symlink(f"{ASTERISK_DATA}/sounds/{entry}", host_data_dir / "sounds" / entry)
    words = voice_dir / "words"
    for source in sorted(p for p in words.rglob("*") if p.is_file()):
        _place(source, host_data_dir / "sounds" / "ja" / source.relative_to(words))


def render(settings: Settings, out_dir: Path, paths: InstancePaths,
           host_sounds_dir: Path | None = None,
           ami_permit: tuple[str, ...] = ("127.0.0.1/255.255.255.255",), *,
           voice_dir: Path | None = None, asterisk_root: Path | None = None) -> list[Path]:
    """Write the configuration into ``out_dir``. With ``host_sounds_dir`` (the instance's
    sounds folder as the host sees it, ``data/`` beside it) the prompts are installed
    there, and with ``voice_dir`` (stack.voice's build) also the Japanese voice.
    ``asterisk_root``: the root file system Asterisk runs in as the host sees it (``/``
    for the host's own Asterisk), None when not visible here."""
    datadir = ASTERISK_DATA
    if host_sounds_dir is not None and voice_dir is not None:
        install_data(host_sounds_dir.parent / "data", voice_dir, asterisk_root)
        datadir = paths.data
    env = jinja2.Environment(  # nosec B701 # renders Asterisk configuration, not HTML
        loader=jinja2.FileSystemLoader(TEMPLATES),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    context = {
        "s": settings,
        "paths": paths,
        "services": settings.services,
        "phones": phones(settings),
        "prompts": prompt_refs(settings, paths, host_sounds_dir, voice_dir, asterisk_root),
        "datadir": datadir,
        "ami_permit": ami_permit,
        "ami_events": SUBSCRIBED_EVENTS,
        "trunk_calls": trunk_calls(settings),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for template in sorted(TEMPLATES.glob("*.conf.j2")):
        target = out_dir / template.name[: -len(".j2")]
        text = env.get_template(template.name).render(**context)
        target.write_text(text, encoding="utf-8")
        target.chmod(0o600)
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--base", default="/var/lib/asterisk/madoguchi",
                        help="instance folder as Asterisk sees it")
    parser.add_argument("--moddir", default="/usr/lib/x86_64-linux-gnu/asterisk/modules")
    parser.add_argument("--ami-permit", action="append", default=None,
                        help="network allowed to use AMI (repeatable)")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    permit = tuple(args.ami_permit) if args.ami_permit else ("127.0.0.1/255.255.255.255",)
    # the instance folder is here (the compose file's render service): install the
    # prompts and the Japanese voice into it, as a locally started instance does
    base = Path(args.base)
    sounds = base / "sounds" if base.is_dir() else None
    voice_dir = build_voice(settings) if sounds is not None else None
    root = Path("/") if Path(ASTERISK_DATA).is_dir() else None  # else Asterisk is elsewhere
    for path in render(settings, args.out_dir, InstancePaths(args.base, args.moddir),
                       host_sounds_dir=sounds, ami_permit=permit, voice_dir=voice_dir,
                       asterisk_root=root):
        print(path)
    return 0


def build_voice(settings: Settings) -> Path | None:
    """The synthesised Japanese prompts, with the texts said per service of ``settings``,
    brought up to date (stack.voice; a no-op when nothing changed); None, with a warning,
    where they cannot be made: callers then hear the English core sounds, as before."""
    try:
        report = voice.build(services=settings.services)
    except (voice.VoiceUnavailable, ValueError, OSError, RuntimeError) as exc:
        logger.warning("no Japanese voice (%s): prompts fall back to the English core "
                       "sounds", exc)
        return None
    if report.generated or report.removed:
        logger.info("%s", report.summary())
    return report.out


if __name__ == "__main__":
    sys.exit(main())
