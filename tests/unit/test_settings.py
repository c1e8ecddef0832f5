from __future__ import annotations

from pathlib import Path

import pytest

from common.settings import (
    SettingsError,
    load_settings,
    to_environ,
)


def test_defaults_describe_the_citizens_section(tmp_path: Path) -> None:
    s = load_settings({"MADOGUCHI_SITE__DATA_DIR": str(tmp_path)})
    citizens = s.service("citizens")
    assert citizens.lines == 7 and citizens.queue == "citizens" and citizens.channel == "phone"
    assert s.service("remote-window").lines == 2
    assert s.service_for_did("0312345678") == citizens
    assert s.service_for_did("0000") is None
    assert len(s.operators.endpoints()) == 7
    assert s.database_url == f"sqlite:///{tmp_path / 'madoguchi.sqlite3'}"


def test_development_generates_credentials_once(tmp_path: Path) -> None:
    env = {"MADOGUCHI_SITE__DATA_DIR": str(tmp_path)}
    first = load_settings(env)
    second = load_settings(env)
    assert first.asterisk.ari_password and first.asterisk.ari_password == \
        second.asterisk.ari_password
    assert first.web.secret_key == second.web.secret_key
    assert (tmp_path / "secrets.toml").stat().st_mode & 0o777 == 0o600
    # phones get distinct derived passwords
    assert first.asterisk.phone_password("op01") != first.asterisk.phone_password("op02")


def test_production_without_secrets_fails_fast(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings({"MADOGUCHI_SITE__ENV": "production",
                       "MADOGUCHI_SITE__DATA_DIR": str(tmp_path)})
    assert "MADOGUCHI_ASTERISK__ARI_PASSWORD" in str(info.value)
    assert not (tmp_path / "secrets.toml").exists()


def test_production_with_secrets_from_environment(tmp_path: Path) -> None:
    env = {"MADOGUCHI_SITE__ENV": "production", "MADOGUCHI_SITE__DATA_DIR": str(tmp_path),
           "MADOGUCHI_ASTERISK__ARI_PASSWORD": "a", "MADOGUCHI_ASTERISK__AMI_SECRET": "b",
           "MADOGUCHI_ASTERISK__SIP_SECRET": "c", "MADOGUCHI_WEB__SECRET_KEY": "d"}
    s = load_settings(env)
    assert s.production and s.asterisk.ami_secret == "b"


@pytest.mark.parametrize(("var", "value", "key", "words"), [
    ("MADOGUCHI_ASTERISK__HTTP_PORT", "eighty", "asterisk.http_port", "whole number"),
    ("MADOGUCHI_ASTERISK__HTTP_PORT", "70000", "asterisk.http_port", "not a port"),
    ("MADOGUCHI_ASTERISK__NO_SUCH", "1", "asterisk.no_such", "unknown key"),
    ("MADOGUCHI_SITE__ENV", "staging", "site.env", "development"),
    ("MADOGUCHI_REDIS__URL", "localhost:6379", "redis.url", "redis://"),
    ("MADOGUCHI_ARI__BACKOFF_MAX", "soon", "ari.backoff_max", "number"),
    ("MADOGUCHI_NOSECTION", "1", "nosection", "MADOGUCHI_<SECTION>__<KEY>"),
    ("MADOGUCHI_TENANTS__ID", "x", "tenants.id", "site file"),
])
def test_malformed_settings_name_the_key(tmp_path: Path, var: str, value: str, key: str,
                                         words: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings({"MADOGUCHI_SITE__DATA_DIR": str(tmp_path), var: value})
    assert info.value.key == key
    assert words in str(info.value)


def test_site_file_layers_over_defaults_and_is_checked(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text('[asterisk]\nsip_port = 5070\n\n[[tenants]]\nid = "other"\nname = "X"\n\n'
                    '[[services]]\nid = "s"\ntenant = "nobody"\nname = "S"\nqueue = "q"\n'
                    'lines = 1\n')
    with pytest.raises(SettingsError) as info:
        load_settings({"MADOGUCHI_CONFIG": str(site), "MADOGUCHI_SITE__DATA_DIR": str(tmp_path)})
    assert info.value.key == "services[0].tenant"
    site.write_text("[asterisk\nbroken")
    with pytest.raises(SettingsError) as info:
        load_settings({"MADOGUCHI_CONFIG": str(site)})
    assert "not valid TOML" in str(info.value)
    with pytest.raises(SettingsError) as info:
        load_settings({"MADOGUCHI_CONFIG": str(tmp_path / "missing.toml")})
    assert "does not exist" in str(info.value)


def test_environment_round_trip(tmp_path: Path) -> None:
    s = load_settings({"MADOGUCHI_SITE__DATA_DIR": str(tmp_path),
                       "MADOGUCHI_KIOSK_BRIDGE__ICE_SERVERS": "stun:127.0.0.1:3478"})
    assert s.kiosk_bridge.ice_servers == ("stun:127.0.0.1:3478",)
    assert load_settings(to_environ(s)) == s


def test_the_rtp_range_must_hold_every_call_the_trunk_may_carry(tmp_path: Path) -> None:
    from common.settings import rtp_ports_needed, trunk_calls

    env = {"MADOGUCHI_SITE__DATA_DIR": str(tmp_path)}
    s = load_settings(env)
    assert trunk_calls(s) == 28  # four per operator line of the citizens' 7 lines
    assert s.asterisk.rtp_end - s.asterisk.rtp_start + 1 >= rtp_ports_needed(s)
    with pytest.raises(SettingsError, match=r"has 100 ports; \d+ are needed for 28 trunk"):
        load_settings(env | {"MADOGUCHI_ASTERISK__RTP_END": str(s.asterisk.rtp_start + 99)})
    assert trunk_calls(load_settings(env | {"MADOGUCHI_TRUNK__MAX_CALLS": "5"})) == 5
    with pytest.raises(SettingsError, match="trunk.max_calls"):
        load_settings(env | {"MADOGUCHI_TRUNK__MAX_CALLS": "-1"})


def test_the_trunk_is_identified_by_its_address_only(tmp_path: Path) -> None:
    from stack.render import InstancePaths, render

    s = load_settings({"MADOGUCHI_SITE__DATA_DIR": str(tmp_path)})
    render(s, tmp_path / "etc", InstancePaths("/srv/x", "/m"))
    pjsip = (tmp_path / "etc" / "pjsip.conf").read_text()
    trunk = pjsip.split(f"[{s.trunk.name}]\ntype=endpoint")[1].split("\n\n")[0]
    assert "identify_by=ip\n" in trunk
    assert "identify_by=username,auth_username" in pjsip.split("[phone-tpl](!)")[1]
    ext = (tmp_path / "etc" / "extensions.conf").read_text()
    assert "GROUP_COUNT(trunk@mado)} > 28]" in ext and "PJSIPHangup(503)" in ext
    assert ext.count("Gosub(mado-screen,s,1)") == 1 + sum(len(v.dids) for v in s.services)
