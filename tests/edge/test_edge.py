"""The SIP edge of the two-site form with a real Kamailio and SIPp sites (conftest.py):
new calls go to the healthy site of the highest priority, a lost site's calls are
re-routed and the site is marked down, a full site's (5xx) go to the next one, early
CANCELs end cleanly, the sites' own calls reach the carrier, and a lost site comes back
only after answering probes for edge.failback_seconds.

Test order matters little: every test leaves both sites running and up."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import httpx
import pytest

from common.edge import (
    EdgeRpcError,
    EdgeUnreachable,
    afetch_routes,
    fetch_routes,
    set_site_state,
    site_uri,
)
from common.settings import settings_override
from stack.edge import Edge, EdgeStartError, failback_probes
from tests.conftest import wait_until
from tests.edge.conftest import CARRIER_IP, EDGE_IP, SITE_IPS, EdgeEnv, free_port

NUMBER = "0312345678"


def answered_by(env: EdgeEnv, number: str = NUMBER, local_ip: str = CARRIER_IP) -> str:
    result = env.call(number, local_ip=local_ip)
    assert result.returncode == 0, result.output
    assert result.outcome.startswith("answered by "), result.output
    return result.outcome.removeprefix("answered by ").strip()


def nothing_under_way(env: EdgeEnv) -> bool:
    """No transaction of the edge is still in progress (finished ones wait a few seconds
    for retransmissions: ``waiting``)."""
    stats = env.edge.rpc("tm.stats")
    return bool(stats["current"] == stats["waiting"])


def restore_a(env: EdgeEnv) -> None:
    """Site a running and taking calls again (the next test starts from there)."""
    if env.sites["a"].proc is None:
        env.sites["a"].start()
    env.wait_state("a", "up", timeout=env.settings.edge.failback_seconds + 10)


def test_the_rpc_lists_every_site_with_its_priority_and_state(edge_env: EdgeEnv) -> None:
    s = edge_env.settings
    routes = fetch_routes(s)
    assert set(routes) == {"a", "b"}
    for site in s.sites:
        route = routes[site.id]
        assert (route.uri, route.priority, route.state, route.flags) == (
            site_uri(site), site.priority, "up", "AP")

    async def both() -> tuple[dict[str, object], dict[str, object]]:
        async with httpx.AsyncClient() as client:
            return await afetch_routes(s, client), await afetch_routes(s)

    shared, own = asyncio.run(both())
    assert shared == own == routes

    # nobody there: a clear error, not a hang
    gone = settings_override(s, edge={"rpc_port": s.edge.port})
    with pytest.raises(EdgeUnreachable, match="did not answer dispatcher.list"):
        fetch_routes(gone, timeout=0.5)
    with pytest.raises(EdgeUnreachable):
        asyncio.run(afetch_routes(gone, timeout=0.5))
    with pytest.raises(EdgeRpcError, match="no.such"):
        edge_env.edge.rpc("no.such")
    # the RPC port serves JSON-RPC on /RPC only, to this machine and the sites' hosts
    rpc = f"http://{s.edge.bind}:{s.edge.rpc_port}"
    assert httpx.get(f"{rpc}/metrics", timeout=2).status_code == 403
    request = {"jsonrpc": "2.0", "method": "dispatcher.list", "id": 1}
    for ip, status in ((SITE_IPS["a"], 200), (CARRIER_IP, 403)):
        with httpx.Client(transport=httpx.HTTPTransport(local_address=ip)) as client:
            assert client.post(f"{rpc}/RPC", json=request, timeout=2).status_code == status


def test_a_new_call_goes_to_the_site_of_the_highest_priority(edge_env: EdgeEnv) -> None:
    before = len(edge_env.sites["b"].received("INVITE"))
    assert answered_by(edge_env) == "a"
    assert edge_env.sites["a"].received("INVITE")[-1] == f"a INVITE sip:{NUMBER}@" \
        f"{edge_env.settings.edge.bind}:{edge_env.settings.edge.port}"
    assert edge_env.sites["a"].received("BYE")  # the hang-up went along the route set
    assert len(edge_env.sites["b"].received("INVITE")) == before


def test_the_site_hangs_up_along_the_route_set(edge_env: EdgeEnv) -> None:
    result = edge_env.call("site-hangs-up")
    assert result.returncode == 0, result.output
    assert result.logged[-2:] == ["answered by a", "hung up by the site"], result.output
    wait_until(lambda: edge_env.sites["a"].received("BYE answered"), 5,
               "site a's BYE was not answered")


def test_the_edge_answers_options_from_a_site_and_from_the_carrier(
        edge_env: EdgeEnv) -> None:
    for ip in (SITE_IPS["b"], CARRIER_IP):
        result = edge_env.call("options", local_ip=ip, scenario="edge_options.xml")
        assert (result.returncode, result.outcome) == (0, "options 200"), result.output


def test_a_site_refusing_with_5xx_passes_the_call_on_and_stays_up(
        edge_env: EdgeEnv) -> None:
    assert answered_by(edge_env, "reject-a") == "b"
    assert edge_env.sites["a"].received("INVITE sip:reject-a@")
    # a full site is not a lost one
    assert edge_env.routes_state() == {"a": "up", "b": "up"}
    assert answered_by(edge_env) == "a"


def test_when_every_site_refuses_the_caller_gets_503(edge_env: EdgeEnv) -> None:
    set_site_state(edge_env.settings, "b", "down")
    try:
        assert edge_env.routes_state()["b"] == "down"
        result = edge_env.call("reject-a")
        assert result.outcome == "refused 503", result.output
    finally:
        set_site_state(edge_env.settings, "b", "up")
    assert edge_env.routes_state()["b"] == "up"


@pytest.mark.parametrize("delay_ms", [1, 100])
def test_an_early_cancel_ends_the_call_with_200_and_487(edge_env: EdgeEnv,
                                                        delay_ms: int) -> None:
    """Site a sends its first reply only 300 ms after the INVITE; the caller cancels
    1 ms or 100 ms after the edge's 100 Trying, long before that. (At 1 ms the CANCEL
    may even overtake the INVITE inside the edge, which then never reaches the site.)"""
    site_a = edge_env.sites["a"]
    invites = len(site_a.received("INVITE sip:slow@"))
    acks = len(site_a.received("ACK 487"))
    result = edge_env.call("slow", scenario="edge_cancel.xml", extra=("-d", str(delay_ms)))
    assert result.returncode == 0, result.output
    assert sorted(result.logged) == ["cancel 200", "invite 487"], result.output
    wait_until(lambda: nothing_under_way(edge_env), 5, "a transaction stayed open")
    if len(site_a.received("INVITE sip:slow@")) > invites:
        # the site got the CANCEL once it had rung, answered 487 and got its ACK
        wait_until(lambda: len(site_a.received("ACK 487")) > acks, 5,
                   "site a got no ACK for its 487")
    else:
        assert delay_ms == 1, "the INVITE did not reach the site"
    assert edge_env.routes_state() == {"a": "up", "b": "up"}


def test_a_call_from_a_site_goes_to_the_carrier(edge_env: EdgeEnv) -> None:
    # placed from site a's address (any port: a site is known by its IP)
    assert answered_by(edge_env, "0901234567", local_ip=SITE_IPS["a"]) == "carrier"
    carrier = edge_env.settings.edge.carrier.removeprefix("sip:")
    assert edge_env.carrier.received("INVITE")[-1] == \
        f"carrier INVITE sip:0901234567@{carrier}"
    assert edge_env.carrier.received("BYE")


def test_a_call_right_after_a_site_is_lost_is_rerouted_and_the_site_marked_down(
        edge_env: EdgeEnv) -> None:
    def timeouts() -> int:  # INVITEs a site sent nothing back for (the edge's log)
        return edge_env.edge.log_tail(100_000).count("sent nothing for")

    before = timeouts()
    edge_env.sites["a"].kill()
    killed = time.monotonic()
    call = edge_env.start_call(NUMBER)  # before any probe could have missed
    down_after = edge_env.wait_state("a", "down", timeout=10) + (call[2] - killed)
    result = edge_env.finish_call(call)
    assert result.outcome == "answered by b", result.output
    timeout = edge_env.settings.edge.invite_timeout_ms / 1000
    # re-routed once a's time for a first reply had run out (generous bounds)
    assert timeout * 0.8 <= result.seconds <= timeout + 5, result.seconds
    print(f"SIGKILL -> down (marked by the call) {down_after:.2f} s; call answered by b "
          f"after {result.seconds:.2f} s")
    assert timeouts() == before + 1, edge_env.edge.log_tail(40)
    # while a is down new calls go straight to b: a is not tried (and waited for) again
    fast = edge_env.call(NUMBER)
    assert fast.outcome == "answered by b", fast.output
    assert timeouts() == before + 1, edge_env.edge.log_tail(40)
    restore_a(edge_env)


def test_probes_mark_a_lost_site_down_and_it_fails_back_only_after_failback_seconds(
        edge_env: EdgeEnv) -> None:
    site_a = edge_env.sites["a"]
    site_a.kill()
    down_after = edge_env.wait_state("a", "down", timeout=15)
    e = edge_env.settings.edge
    # probe_failures probes missed: not sooner than the first of them could time out
    assert down_after >= e.probe_timeout_ms / 1000, down_after
    print(f"SIGKILL -> down (probes) {down_after:.2f} s")
    assert answered_by(edge_env) == "b"

    site_a.start()
    # its first answered probe does not bring it back ...
    wait_until(lambda: site_a.received("OPTIONS"), 5, "site a was not probed")
    assert edge_env.routes_state()["a"] == "down"
    assert answered_by(edge_env) == "b"
    # ... only failback_probes answered in a row (failback_seconds) do
    up_after = edge_env.wait_state("a", "up", timeout=e.failback_seconds + 10)
    answered = len(site_a.received("OPTIONS"))
    assert answered >= failback_probes(edge_env.settings), answered
    print(f"first answered probe -> up {up_after:.2f} s ({answered} probes answered)")
    assert answered_by(edge_env) == "a"


def test_an_administrator_fails_a_site_over_and_back(edge_env: EdgeEnv) -> None:
    s = edge_env.settings
    set_site_state(s, "a", "down")
    assert fetch_routes(s)["a"].state == "down"
    assert answered_by(edge_env) == "b"
    set_site_state(s, "a", "up")  # at once, without waiting for failback_seconds
    assert fetch_routes(s)["a"].flags == "AP"
    assert answered_by(edge_env) == "a"
    with pytest.raises(ValueError, match="not one of the sites"):
        set_site_state(s, "z", "up")
    with pytest.raises(ValueError, match="'up' or 'down'"):
        set_site_state(s, "a", "ap")


def test_an_edge_that_cannot_start_says_why_and_a_killed_one_is_unreachable(
        edge_env: EdgeEnv, tmp_path: Path) -> None:
    # the same addresses as the running edge: refused before Kamailio starts (its RPC
    # would seem to answer: the running edge's)
    twin = Edge(edge_env.settings, tmp_path / "twin")
    with pytest.raises(EdgeStartError, match="edge.rpc_port"):
        twin.start()
    assert not twin.running()
    # an address Kamailio cannot listen on: its own words, from its log
    nowhere = settings_override(edge_env.settings, edge={"bind": "192.0.2.1"})
    with pytest.raises(EdgeStartError) as info:
        Edge(nowhere, tmp_path / "nowhere").start()
    assert "exited during start-up" in str(info.value)
    assert "192.0.2.1" in str(info.value).split("\n", 1)[1], info.value

    s = edge_env.settings
    other = settings_override(s, edge={"port": free_port(EDGE_IP),
                                       "rpc_port": free_port(EDGE_IP, socket.SOCK_STREAM)})
    second = Edge(other, tmp_path / "second")
    second.start()
    try:
        assert second.running()
        assert set(fetch_routes(other)) == {"a", "b"}
        second.kill()
        assert not second.running()
        with pytest.raises(EdgeUnreachable):
            fetch_routes(other, timeout=0.5)
    finally:
        second.stop()
    assert edge_env.routes_state() == {"a": "up", "b": "up"}  # the first one is unharmed
