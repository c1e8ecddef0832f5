"""How layered TOML files and environment variables become typed, frozen dataclasses.

Knows no section: ``common.settings`` declares the sections and the product's rules and
calls these. Every error is a ``SettingsError`` naming the dotted key and where its value
came from.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import tomllib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any


class SettingsError(Exception):
    """Configuration that cannot be used; the message names the key and the fix."""

    def __init__(self, key: str, message: str, source: str = "") -> None:
        self.key = key
        self.source = source
        where = f" (from {source})" if source else ""
        super().__init__(f"configuration error at '{key}'{where}: {message}")


def read_toml(path: Path, what: str) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise SettingsError(what, f"file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(what, f"{path} is not valid TOML: {exc}") from None


def merge(base: dict[str, Any], over: Mapping[str, Any], sources: dict[str, str], src: str,
           prefix: str = "") -> None:
    for key, value in over.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value, sources, src, dotted + ".")
        else:
            base[key] = value
            sources[dotted] = src


def coerce(value: Any, tp: Any, key: str, source: str,
            sources: Mapping[str, str] | None = None) -> Any:
    """Convert a raw TOML/env value to the annotated type, or raise SettingsError."""
    origin = typing.get_origin(tp)
    if origin is tuple:
        (item_tp, _ellipsis) = typing.get_args(tp)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise SettingsError(key, f"expected a list, got {value!r}", source)
        return tuple(coerce(v, item_tp, f"{key}[{i}]", source) for i, v in enumerate(value))
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise SettingsError(key, f"expected a table, got {value!r}", source)
        return build(tp, value, key, sources or {}, source)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false",
                                                         "no", "off"):
            return value.lower() in ("1", "true", "yes", "on")
        raise SettingsError(key, f"expected true or false, got {value!r}", source)
    if tp is int:
        if isinstance(value, bool):
            raise SettingsError(key, f"expected a whole number, got {value!r}", source)
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            with contextlib.suppress(ValueError):  # not a number: the error below
                return int(value.strip())
        raise SettingsError(key, f"expected a whole number, got {value!r}", source)
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            with contextlib.suppress(ValueError):  # not a number: the error below
                return float(value.strip())
        raise SettingsError(key, f"expected a number, got {value!r}", source)
    if tp is str:
        if isinstance(value, str):
            return value
        raise SettingsError(key, f"expected text, got {value!r}", source)
    raise TypeError(f"unsupported settings type {tp!r} for {key}")


def build(cls: Any, raw: Mapping[str, Any], prefix: str, sources: Mapping[str, str],
           default_source: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in names:
            dotted = f"{prefix}.{key}" if prefix else key
            known = ", ".join(sorted(names))
            raise SettingsError(dotted, f"unknown key (known keys here: {known})",
                                sources.get(dotted, default_source))
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        dotted = f"{prefix}.{f.name}" if prefix else f.name
        if f.name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise SettingsError(dotted, "is required", default_source)
            continue
        kwargs[f.name] = coerce(raw[f.name], hints[f.name], dotted,
                                 sources.get(dotted, default_source), sources)
    return cls(**kwargs)


def env_overrides(environ: Mapping[str, str], raw: dict[str, Any], sources: dict[str, str],
                  root: type, prefix: str, skip: str) -> None:
    """Put ``<prefix><SECTION>__<KEY>`` variables of ``environ`` into ``raw`` (only
    sections of ``root`` that are tables; ``skip`` is a variable of the prefix that is no
    setting)."""
    sections = {f.name: f for f in dataclasses.fields(root)}
    for var, value in environ.items():
        if not var.startswith(prefix) or var == skip:
            continue
        rest = var[len(prefix):].lower()
        if "__" not in rest:
            raise SettingsError(rest, f"environment variable {var} must look like "
                                f"{prefix}<SECTION>__<KEY>", f"environment variable {var}")
        section, key = rest.split("__", 1)
        fld = sections.get(section)
        if fld is None or not dataclasses.is_dataclass(fld.default_factory):
            raise SettingsError(f"{section}.{key}", "no such section can be set from the "
                                "environment (lists such as tenants belong in the site file)",
                                f"environment variable {var}")
        raw.setdefault(section, {})[key] = value
        sources[f"{section}.{key}"] = f"environment variable {var}"


def generated_secrets(path: Path, names: tuple[tuple[str, str], ...],
                      what: str) -> dict[str, dict[str, str]]:
    """Secrets ``names`` ((section, key)) for development: generated once into ``path``
    (mode 0600) and read from there afterwards (``what`` names the setting of its folder)."""
    if path.exists():
        return {k: dict(v) for k, v in read_toml(path, what).items()}
    generated: dict[str, dict[str, str]] = {}
    for section, key in names:
        generated.setdefault(section, {})[key] = secrets.token_urlsafe(18)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["# Generated development credentials. Not for production.\n"]
    for section, values in generated.items():
        lines.append(f"\n[{section}]\n")
        lines.extend(f'{k} = "{v}"\n' for k, v in values.items())
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.writelines(lines)
    with contextlib.suppress(FileExistsError):  # another process's file is kept
        os.link(tmp, path)  # atomic: the first process to generate wins
    tmp.unlink(missing_ok=True)
    return {k: dict(v) for k, v in read_toml(path, what).items()}
