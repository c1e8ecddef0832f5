"""docker-compose.yml is validated here (no Docker engine runs on the test machines)."""

from __future__ import annotations

import dataclasses
import importlib.util
import re
from pathlib import Path

import yaml

from common.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_every_service_is_defined_with_health_checks() -> None:
    services = compose()["services"]
    assert {"asterisk", "redis", "postgres", "ari_app", "kiosk_bridge", "web", "worker",
            "cron"} <= set(services)
    for name, svc in services.items():
        if name != "render":
            assert "healthcheck" in svc, f"{name} has no health check"
            assert svc.get("restart") == "unless-stopped", name


def test_commands_name_modules_that_exist() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    modules = set(re.findall(r'"-m", "([a-z_.]+)"', text)) | set(
        re.findall(r"python -m ([a-z_.]+)", text))
    assert {"ari_app.main", "kiosk_bridge.main", "reports.worker", "stack.render",
            "stack.check"} <= modules
    for module in modules:
        assert importlib.util.find_spec(module) is not None, module
    assert importlib.util.find_spec("web.wsgi") is not None
    for dockerfile in ("deploy/app.Dockerfile", "deploy/asterisk.Dockerfile"):
        assert (ROOT / dockerfile).exists()


def test_environment_names_match_the_settings() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    names = set(re.findall(r"\b(MADOGUCHI_[A-Z_]+)\b", text)) - {"MADOGUCHI_CONFIG"}
    sections = {f.name: f for f in dataclasses.fields(Settings)}
    for name in names:
        section, key = name[len("MADOGUCHI_"):].lower().split("__", 1)
        part = sections[section].default_factory()  # type: ignore[misc]
        assert key in {f.name for f in dataclasses.fields(part)}, name
    # every production secret is required from the environment
    for secret in ("ARI_PASSWORD", "AMI_SECRET", "SIP_SECRET"):
        assert f"MADOGUCHI_ASTERISK__{secret}: ${{MADOGUCHI_ASTERISK__{secret}:?" in text
    assert "MADOGUCHI_WEB__SECRET_KEY: ${MADOGUCHI_WEB__SECRET_KEY:?" in text


def test_ports_agree_with_the_settings(tmp_path: Path) -> None:
    s = load_settings({"MADOGUCHI_SITE__DATA_DIR": str(tmp_path)})
    text = (ROOT / "docker-compose.yml").read_text()
    assert f"127.0.0.1:{s.web.port}" in text
    assert f"proxy_pass http://127.0.0.1:{s.web.port}" in (ROOT / "deploy/nginx.conf").read_text()
    assert "redis://127.0.0.1:6379" in text and s.redis.url.startswith("redis://127.0.0.1:6379")


def test_site_example_loads_in_production(tmp_path: Path) -> None:
    env = {"MADOGUCHI_CONFIG": str(ROOT / "deploy" / "site.toml"),
           "MADOGUCHI_SITE__DATA_DIR": str(tmp_path),
           "MADOGUCHI_ASTERISK__ARI_PASSWORD": "a", "MADOGUCHI_ASTERISK__AMI_SECRET": "b",
           "MADOGUCHI_ASTERISK__SIP_SECRET": "c", "MADOGUCHI_WEB__SECRET_KEY": "d"}
    s = load_settings(env)
    assert s.production and s.asterisk.sip_bind == "0.0.0.0"
