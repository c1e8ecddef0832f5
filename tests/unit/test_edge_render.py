"""The SIP edge's Kamailio configuration (edge/kamailio.cfg.j2) is rendered from the
settings ([edge], [[sites]]), Kamailio itself accepts it, and bad settings stop with the
key named."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from common.edge import SiteRoute, flags_state, parse_dispatcher_list
from common.settings import Settings, SettingsError, load_settings
from stack.edge import (
    EdgeUnavailable,
    check_config,
    failback_probes,
    kamailio_binary,
    main,
    render_edge,
)

SITES = """
[[sites]]
id = "b"
name = "北支所"
sip = "192.0.2.30:5060"
web = "http://192.0.2.30:8000/"
priority = 10

[[sites]]
id = "a"
name = "本庁舎"
sip = "192.0.2.20:5070"
web = "http://192.0.2.20:8000/"
priority = 20
"""


def site_env(tmp_path: Path, edge: str = "", sites: str = SITES) -> dict[str, str]:
    site = tmp_path / "site.toml"
    site.write_text(f"[edge]\n{edge}\n{sites}")
    return {"MADOGUCHI_CONFIG": str(site), "MADOGUCHI_SITE__DATA_DIR": str(tmp_path / "data")}


def two_sites(tmp_path: Path, edge: str = "") -> Settings:
    return load_settings(site_env(tmp_path, edge))


@pytest.fixture(scope="module")
def kamailio() -> str:
    try:
        return kamailio_binary()
    except EdgeUnavailable as exc:
        pytest.fail(str(exc))


def modparam(cfg: str, module: str, name: str) -> str:
    found = re.findall(rf'^modparam\("{module}", "{name}", (.+)\)$', cfg, re.M)
    assert len(found) == 1, f"{module}.{name}: {found}"
    return found[0].strip('"')


def test_two_sites_render_by_priority_with_timers_from_the_settings(tmp_path: Path) -> None:
    s = two_sites(tmp_path, 'bind = "192.0.2.1"\nport = 5090\nrpc_port = 5091\n'
                  'probe_interval = 3\nprobe_failures = 4\nprobe_timeout_ms = 700\n'
                  'invite_timeout_ms = 2500\nfailback_seconds = 10\n'
                  'carrier = "sip:198.51.100.7:5062"\n')
    cfg_path = render_edge(s, tmp_path / "edge")
    assert cfg_path == (tmp_path / "edge" / "kamailio.cfg").resolve()
    assert (tmp_path / "edge" / "run").is_dir()

    entries = [line.split() for line in (tmp_path / "edge" / "dispatcher.list").read_text()
               .splitlines() if not line.startswith("#")]
    # set 1, highest priority first, each with its site id as duid
    assert entries == [["1", "sip:192.0.2.20:5070", "0", "20", "duid=a"],
                       ["1", "sip:192.0.2.30:5060", "0", "10", "duid=b"]]

    cfg = cfg_path.read_text()
    assert "listen=udp:192.0.2.1:5090" in cfg
    assert "listen=tcp:192.0.2.1:5091" in cfg  # the JSON-RPC's only
    assert re.search(r"^children=1$", cfg, re.M)  # in order: one SIP worker
    assert re.search(r"^log_stderror=yes$", cfg, re.M)
    assert modparam(cfg, "dispatcher", "list_file") == str(tmp_path.resolve() / "edge" /
                                                           "dispatcher.list")
    assert modparam(cfg, "dispatcher", "ds_ping_interval") == "3"
    assert modparam(cfg, "dispatcher", "ds_probing_mode") == "1"
    assert modparam(cfg, "dispatcher", "ds_probing_threshold") == "4"
    # back after 5 answered probes in a row: the first, then 4 more 3 s apart (12 s >= 10 s)
    assert failback_probes(s) == 5
    assert modparam(cfg, "dispatcher", "ds_inactive_threshold") == "5"
    # a probe is missed after probe_timeout_ms: tm's default wait, which the probes use
    assert modparam(cfg, "tm", "fr_timer") == "700"
    codes = modparam(cfg, "dispatcher", "ds_ping_reply_codes").split(";")
    assert {"code=401", "code=403", "code=404", "code=405", "code=501"} <= set(codes)
    assert "code=408" not in codes and "class=4" not in codes and "class=5" not in codes
    # new calls: first reply within invite_timeout_ms, then 120 s to be answered
    assert 't_set_fr(120000, 2500);' in cfg
    assert 'ds_select_dst("1", "8")' in cfg
    assert 'ds_mark_dst("ip")' in cfg
    # calls the sites place go to the carrier, keeping the dialled number
    assert '$ru = "sip:" + $rU + "@198.51.100.7:5062";' in cfg
    assert "No carrier configured" not in cfg


def test_failback_probes_round_up(tmp_path: Path) -> None:
    s = two_sites(tmp_path, "probe_interval = 2\nfailback_seconds = 60\n")
    assert failback_probes(s) == 31  # the first answer, then 30 more 2 s apart
    s = two_sites(tmp_path, "probe_interval = 7\nfailback_seconds = 60\n")
    assert failback_probes(s) == 10  # 9 probes would span only 56 s


def test_without_a_carrier_site_calls_are_refused(tmp_path: Path) -> None:
    cfg = render_edge(two_sites(tmp_path), tmp_path / "edge").read_text()
    assert 'sl_send_reply("503", "No carrier configured");' in cfg
    assert "$rU +" not in cfg


@pytest.mark.parametrize("edge", ["", 'carrier = "sip:198.51.100.7:5062"\n',
                                  'carrier = "sip:trunk@carrier.example:5060"\n'])
def test_kamailio_accepts_the_rendered_configuration(kamailio: str, tmp_path: Path,
                                                     edge: str) -> None:
    ok, output = check_config(render_edge(two_sites(tmp_path, edge), tmp_path / "edge"))
    assert ok, output


def test_the_check_would_catch_a_broken_configuration(kamailio: str, tmp_path: Path) -> None:
    cfg = render_edge(two_sites(tmp_path), tmp_path / "edge")
    cfg.write_text(cfg.read_text().replace("record_route();", "record_route_nowhere();", 1))
    ok, output = check_config(cfg)
    assert not ok and "record_route_nowhere" in output


@pytest.mark.parametrize(("edge", "sites", "key"), [
    ("probe_interval = 0\n", SITES, "edge.probe_interval"),
    ("probe_failures = 0\n", SITES, "edge.probe_failures"),
    ("probe_timeout_ms = 50\n", SITES, "edge.probe_timeout_ms"),
    ("invite_timeout_ms = 100\n", SITES, "edge.invite_timeout_ms"),
    ("failback_seconds = 0\n", SITES, "edge.failback_seconds"),
    ("rpc_port = 5080\n", SITES, "edge.rpc_port"),
    ("port = 70000\n", SITES, "edge.port"),
    ('carrier = "192.0.2.10:5060"\n', SITES, "edge.carrier"),
    ('probe_interval = "often"\n', SITES, "edge.probe_interval"),
    ("", SITES.replace('"192.0.2.30:5060"', '"192.0.2.30"'), "sites[0].sip"),
    ("", SITES.replace("priority = 10", "priority = 20"), "sites"),
    ("", SITES.replace('id = "b"', 'id = "A-1"'), "sites[0].id"),
    ("", SITES.split("[[sites]]", 2)[0] + "[[sites]]" + SITES.split("[[sites]]", 2)[2],
     "sites"),
])
def test_bad_edge_settings_name_the_key(tmp_path: Path, edge: str, sites: str,
                                        key: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(site_env(tmp_path, edge, sites))
    assert info.value.key == key, info.value


SITE_B = {"MADOGUCHI_SITE__ID": "b", "MADOGUCHI_REDIS__PREFIX": "mado-b",
          "MADOGUCHI_TRUNK__MATCH": "127.0.0.1", "MADOGUCHI_ASTERISK__SIP_BIND": "192.0.2.30",
          "MADOGUCHI_ASTERISK__SIP_PORT": "5060"}


@pytest.mark.parametrize(("change", "key"), [
    ({}, ""),  # site B's own processes, as stack.sites starts them
    ({"MADOGUCHI_SITE__ID": "c"}, "site.id"),
    ({"MADOGUCHI_REDIS__PREFIX": "mado"}, "redis.prefix"),
    ({"MADOGUCHI_TRUNK__MATCH": "192.0.2.99"}, "trunk.match"),
    ({"MADOGUCHI_ASTERISK__SIP_PORT": "5070"}, "asterisk.sip_port"),
])
def test_a_sites_processes_must_match_its_entry(tmp_path: Path, change: dict[str, str],
                                                 key: str) -> None:
    """A site's processes run with site.id set; their Redis prefix, trunk and SIP address
    must be the site's, or they would mix their live state or calls with another's."""
    environ = {**site_env(tmp_path), **SITE_B, **change}
    if not key:
        s = load_settings(environ)
        assert s.this_site is not None and s.this_site.name == "北支所"
        assert s.site_prefix(s.this_site) == "mado-b"
        return
    with pytest.raises(SettingsError) as info:
        load_settings(environ)
    assert info.value.key == key, info.value


def test_a_site_id_needs_the_sites(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings({"MADOGUCHI_SITE__DATA_DIR": str(tmp_path / "data"),
                       "MADOGUCHI_SITE__ID": "a"})
    assert info.value.key == "site.id"


def test_the_single_site_form_has_no_edge_to_render(tmp_path: Path) -> None:
    s = load_settings({"MADOGUCHI_SITE__DATA_DIR": str(tmp_path / "data")})
    with pytest.raises(SettingsError) as info:
        render_edge(s, tmp_path / "edge")
    assert info.value.key == "sites"


def test_command_line_render_and_check(kamailio: str, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    for name, value in site_env(tmp_path).items():
        monkeypatch.setenv(name, value)
    assert main(["render", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "kamailio.cfg").exists()
    assert (tmp_path / "out" / "dispatcher.list").exists()
    assert main(["check"]) == 0
    assert "valid" in capsys.readouterr().out

    for name, value in site_env(tmp_path, "probe_failures = 99\n").items():
        monkeypatch.setenv(name, value)
    assert main(["check"]) == 2
    err = capsys.readouterr().err
    assert "edge.probe_failures" in err and "Traceback" not in err


# ---- reading the edge's view back (common.edge): the dispatcher.list RPC result, as
# Kamailio 5.6 returns it (captured from tests/edge's edge)

def dest(uri: str, flags: str, priority: int, body: str | None) -> dict[str, object]:
    out: dict[str, object] = {"URI": uri, "FLAGS": flags, "PRIORITY": priority}
    if body is not None:
        duid = body.partition("duid=")[2].split(";")[0] or None
        out["ATTRS"] = {"BODY": body, "DUID": duid, "MAXLOAD": 0, "WEIGHT": 0,
                        "RWEIGHT": 0, "SOCKET": None, "SOCKNAME": None, "OBPROXY": None}
    return {"DEST": out}


def test_dispatcher_list_is_read_into_site_routes() -> None:
    result = {"NRSETS": 2, "RECORDS": [
        {"SET": {"ID": 1, "TARGETS": [
            dest("sip:127.0.0.2:5060", "AP", 20, "duid=a"),
            dest("sip:127.0.0.3:5060", "IP", 10, "duid=b"),
            dest("sip:127.0.0.5:5060", "TP", 5, "weight=1;duid=c"),
            dest("sip:127.0.0.6:5060", "DX", 4, "duid=d"),
            dest("sip:127.0.0.7:5060", "AX", 3, None),  # no duid: not a site
        ]}},
        {"SET": {"ID": 2, "TARGETS": [dest("sip:127.0.0.8:5060", "AP", 1, "duid=x")]}},
    ]}
    routes = parse_dispatcher_list(result)
    assert routes == {
        "a": SiteRoute("a", "sip:127.0.0.2:5060", 20, "up", "AP"),
        "b": SiteRoute("b", "sip:127.0.0.3:5060", 10, "down", "IP"),
        "c": SiteRoute("c", "sip:127.0.0.5:5060", 5, "probing", "TP"),
        "d": SiteRoute("d", "sip:127.0.0.6:5060", 4, "down", "DX"),
    }
    # one set with one destination comes as a list too; an empty result has no sites
    assert parse_dispatcher_list({"NRSETS": 0}) == {}
    # the duid from the attributes' body when the RPC leaves DUID out
    bare = {"RECORDS": [{"SET": {"ID": 1, "TARGETS": [
        {"DEST": {"URI": "sip:h:1", "FLAGS": "AX", "PRIORITY": 1,
                  "ATTRS": {"BODY": "duid=z"}}}]}}]}
    assert parse_dispatcher_list(bare)["z"].state == "up"


@pytest.mark.parametrize(("flags", "state"), [("AP", "up"), ("AX", "up"), ("TP", "probing"),
                                              ("IP", "down"), ("IX", "down"),
                                              ("DX", "down")])
def test_dispatcher_flags_map_to_site_states(flags: str, state: str) -> None:
    assert flags_state(flags) == state
