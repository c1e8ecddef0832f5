"""FAQ suggestions from what the caller said.

Each final caller segment is noted; at most every ``debounce`` seconds per call, the
caller's speech of the last ``window`` seconds goes to the FAQ ``suggest()`` (the
documented interface of ``faq.store.FaqSearch``). When the top items change, the new
list, with the words that matched, is handed to ``publish``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

logger = logging.getLogger(__name__)


class Searcher(Protocol):
    def suggest(self, text: str, *, tenant: str, channel: str | None = None,
                k: int = 5) -> Sequence[Any]: ...


@dataclass
class _CallWindow:
    tenant: str
    channel: str
    said: deque[tuple[float, str]] = field(default_factory=deque)  # (end seconds, text)
    pending: asyncio.TimerHandle | None = None
    last_run: float = 0.0
    top: tuple[int, ...] = ()


class Suggester:
    def __init__(self, searcher: Searcher | None,
                 publish: Callable[[str, str, list[dict[str, Any]]], Awaitable[None]],
                 window: float = 30.0, debounce: float = 1.0, k: int = 5) -> None:
        self.searcher = searcher
        self.publish = publish
        self.window = window
        self.debounce = debounce
        self.k = k
        self.calls: dict[str, _CallWindow] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def note(self, call_id: str, tenant: str, channel: str, end: float, text: str) -> None:
        """A final caller segment (already masked)."""
        if self.searcher is None or not text.strip():
            return
        win = self.calls.get(call_id)
        if win is None:
            win = self.calls[call_id] = _CallWindow(tenant, channel)
        win.said.append((end, text))
        while win.said and win.said[0][0] < end - self.window:
            win.said.popleft()
        if win.pending is not None:
            return  # a run is already due: it will see this text too
        loop = asyncio.get_running_loop()
        delay = max(0.0, win.last_run + self.debounce - loop.time())
        win.pending = loop.call_later(delay, self._start, call_id)

    def _start(self, call_id: str) -> None:
        task = asyncio.get_running_loop().create_task(self._run(call_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, call_id: str) -> None:
        win = self.calls.get(call_id)
        if win is None or self.searcher is None:
            return
        win.pending = None
        win.last_run = asyncio.get_running_loop().time()
        text = " ".join(t for _end, t in win.said)
        try:
            found = await asyncio.to_thread(self.searcher.suggest, text, tenant=win.tenant,
                                            channel=win.channel, k=self.k)
        except Exception:  # a search failure must never touch the call
            logger.exception("%s: FAQ suggestion failed", call_id)
            return
        top = tuple(int(s.item_id) for s in found)
        if not top or top == win.top:
            return
        win.top = top
        items = [{"item_id": int(s.item_id), "title": str(s.title),
                  "score": round(float(s.score), 3),
                  "matched": list(getattr(s, "matched_terms", ()))} for s in found]
        await self.publish(call_id, win.tenant, items)

    def forget(self, call_id: str) -> None:
        win = self.calls.pop(call_id, None)
        if win is not None and win.pending is not None:
            win.pending.cancel()

    async def close(self) -> None:
        for call_id in list(self.calls):
            self.forget(call_id)
        await asyncio.gather(*self._tasks, return_exceptions=True)
