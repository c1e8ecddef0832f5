"""Render Asterisk's configuration from the project's settings (Jinja2).

The same templates serve development, tests and production, so queue names,
extensions, ports and credentials never disagree between Asterisk and Python.

    python -m stack.render OUT_DIR [--base /etc/asterisk-instance] [--moddir DIR]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import jinja2

from ari_app.ami import SUBSCRIBED_EVENTS
from common.prompts import load_prompts
from common.settings import (
    PROJECT_ROOT,
    Settings,
    SettingsError,
    load_settings,
    staff_endpoint,
)

TEMPLATES = PROJECT_ROOT / "asterisk" / "templates"
SOUND_EXTENSIONS = (".wav", ".gsm", ".ulaw", ".alaw", ".sln", ".sln16")


@dataclass(frozen=True)
class InstancePaths:
    """Folders of one Asterisk instance, as Asterisk itself sees them."""

    base: str
    moddir: str

    @property
    def sounds(self) -> str:
        return f"{self.base}/sounds"


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


def prompt_refs(settings: Settings, paths: InstancePaths,
                host_sounds_dir: Path | None) -> dict[str, str]:
    """Map each prompt to what Asterisk plays: the city's recording or the core sound.

    Recordings found in ``prompts.custom_dir`` are copied to ``host_sounds_dir`` (the
    instance's sound folder as the host sees it) when given.
    """
    custom = Path(settings.prompts.custom_dir)
    if not custom.is_absolute():
        custom = PROJECT_ROOT / custom
    refs: dict[str, str] = {}
    for name, prompt in load_prompts().items():
        recording = next((custom / f"{name}{ext}" for ext in SOUND_EXTENSIONS
                          if (custom / f"{name}{ext}").is_file()), None)
        if recording is not None and host_sounds_dir is not None:
            host_sounds_dir.mkdir(parents=True, exist_ok=True)
            shutil.copy2(recording, host_sounds_dir / recording.name)
            refs[name] = f"{paths.sounds}/{name}"
        else:
            refs[name] = prompt["fallback"]
    return refs


def render(settings: Settings, out_dir: Path, paths: InstancePaths,
           host_sounds_dir: Path | None = None,
           ami_permit: tuple[str, ...] = ("127.0.0.1/255.255.255.255",)) -> list[Path]:
    env = jinja2.Environment(
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
        "prompts": prompt_refs(settings, paths, host_sounds_dir),
        "ami_permit": ami_permit,
        "ami_events": SUBSCRIBED_EVENTS,
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
    for path in render(settings, args.out_dir, InstancePaths(args.base, args.moddir),
                       ami_permit=permit):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
