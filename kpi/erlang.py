"""Erlang C: the probability that a call waits, the service level it gives, and the
fewest operators that reach the service-level target (docs/kpi.md, "Erlang C staffing")."""

from __future__ import annotations

import math


def erlang_c(traffic: float, agents: int) -> float:
    """Probability that a call waits (Erlang C) for ``traffic`` Erlangs on ``agents``."""
    if agents <= 0 or traffic <= 0:
        return 0.0 if traffic <= 0 else 1.0
    if traffic >= agents:
        return 1.0
    b = 1.0  # Erlang B by the stable recursion
    for n in range(1, agents + 1):
        b = traffic * b / (n + traffic * b)
    return b / (1 - (traffic / agents) * (1 - b))


def erlang_service_level(calls_per_hour: float, aht_s: float, agents: int,
                         threshold_s: float) -> float:
    """Share (0-1) of calls answered within ``threshold_s`` with ``agents`` operators."""
    if calls_per_hour <= 0:
        return 1.0
    traffic = calls_per_hour * aht_s / 3600.0
    if agents <= traffic:
        return 0.0
    pw = erlang_c(traffic, agents)
    return 1.0 - pw * math.exp(-(agents - traffic) * threshold_s / aht_s)


def agents_needed(calls_per_hour: float, aht_s: float, threshold_s: float,
                  target_pct: float, max_agents: int = 500) -> int:
    """Fewest operators whose Erlang C service level reaches ``target_pct``."""
    if calls_per_hour <= 0 or aht_s <= 0:
        return 0
    n = max(1, math.ceil(calls_per_hour * aht_s / 3600.0))
    while n < max_agents:
        if erlang_service_level(calls_per_hour, aht_s, n, threshold_s) * 100 >= target_pct:
            return n
        n += 1
    return max_agents
