"""The suggestion path with text (language-independent): Japanese final segments, as
Vosk's Japanese model writes them (words separated by spaces), go through the
transcriber's output step; the caller's speech (masked) reaches the FAQ search built
from the sample FAQ (faq/data/sample_faq.csv) in the real Redis, and the right item is
published on the call's suggestions key with the words that matched, debounced; the
operator's speech is never searched."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import redis

from bench.faq_search import sample_items
from common.bus import read_events
from common.console_events import suggestions_key
from common.events import decode
from common.keys import Keys
from common.settings import Settings, load_settings, settings_override
from common.transcription import StreamInfo
from faq import store
from transcriber.engine import Segment, Stream
from transcriber.service import TranscriberService
from transcriber.vad import EnergyVad

CALL = "call-jp-1"
DEBOUNCE = 0.5


@pytest.fixture
def jp_settings(redis_url: str, tmp_path: Path) -> Settings:
    base = load_settings({"MADOGUCHI_SITE__DATA_DIR": str(tmp_path / "data")})
    return settings_override(
        base, redis={"url": redis_url},
        database={"url": f"sqlite:///{tmp_path / 'db.sqlite3'}"},
        transcription={"faq_encoder": "none", "suggest_debounce_seconds": DEBOUNCE,
                       "suggest_window_seconds": 30.0, "suggestions": 3})


class Recorder:
    """The real FAQ search, with a note of every text it was asked about."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.asked: list[tuple[float, str]] = []

    def suggest(self, text: str, *, tenant: str, channel: str | None = None,
                k: int = 5) -> Sequence[Any]:
        self.asked.append((time.monotonic(), text))
        return self.inner.suggest(text, tenant=tenant, channel=channel, k=k)  # type: ignore[no-any-return]


def titles() -> dict[int, str]:
    return {it.id: it.title for it in sample_items()}


async def scenario(settings: Settings) -> tuple[Recorder, list[list[dict[str, Any]]]]:
    client = redis.Redis.from_url(settings.redis.url)
    store.build_and_store(client, sample_items(), None, settings.redis.prefix)
    client.close()
    service = TranscriberService(settings, instance="test")
    # the transcriber's own searcher (FaqSearch on Redis, lexical): what run() would load
    searcher = Recorder(await asyncio.to_thread(service._make_searcher))
    assert searcher.inner is not None, "the FAQ search did not load"
    service.suggester.searcher = searcher
    keys = Keys(settings.redis.prefix)
    published: list[list[dict[str, Any]]] = []
    watcher = redis.Redis.from_url(settings.redis.url)

    def snapshot() -> None:
        raw = watcher.get(suggestions_key(keys, CALL))
        items = json.loads(raw) if raw else []
        if items and (not published or items != published[-1]):
            published.append(items)

    def stream(speaker: str, direction: str) -> Stream:
        info = StreamInfo(call_id=CALL, tenant="city", speaker=speaker,
                          started_at=time.time(), channel="phone", direction=direction)
        return Stream(f"127.0.0.1:{4000 if speaker == 'caller' else 4002}", info, EnergyVad())

    caller, operator = stream("caller", "in"), stream("operator", "out")

    async def say(who: Stream, text: str, end: float) -> None:
        await service._write(who, Segment("final", text, end - 2.0, end, 0.9, time.time()))

    async def searched(n: int) -> None:
        for _ in range(200):
            if len(searcher.asked) >= n:
                await asyncio.sleep(0.2)  # its result published
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"{n} searches expected, {len(searcher.asked)} made")

    try:
        # the operator's words name another item: they are never searched
        await say(operator, "印鑑 登録 を し たい 方 は こちら です", 2.0)
        await asyncio.sleep(DEBOUNCE * 2)
        assert searcher.asked == []
        # the caller asks for a copy of the residence certificate: searched at once ...
        await say(caller, "あの ー 住民 票 の 写し を", 5.5)
        await searched(1)
        snapshot()
        # ... and the next two segments, said right after, in one debounced search
        await say(caller, "取り たい ん です が", 7.0)
        await say(caller, "どこ で 取れ ます か", 9.0)
        await searched(2)
        snapshot()
        # later (outside the 30 s window): a phone number, masked before the search
        # sees it, then the PIN of the My Number card
        await say(caller, "電話 番号 は ゼロ 九 ゼロ 一 二 三 四 五 六 七 八 です", 50.0)
        await searched(3)
        await say(caller, "マイナンバー カード の 暗証 番号 を 忘れ て しまっ た ん です", 53.0)
        await searched(4)
        snapshot()
        await asyncio.sleep(DEBOUNCE * 2)
        await service.suggester.close()
    finally:
        watcher.close()
        await service.redis.aclose()
    return searcher, published


def test_japanese_caller_speech_publishes_the_right_faq_items(jp_settings: Settings) -> None:
    searcher, published = asyncio.run(scenario(jp_settings))
    names = titles()
    # only the caller's speech was searched, never the operator's; debounced
    texts = [t for _at, t in searcher.asked]
    assert len(texts) == 4, texts
    assert all("印鑑" not in t for t in texts)
    assert texts[0] == "あのー住民票の写しを"
    assert texts[1] == "あのー住民票の写しを 取りたいんですが どこで取れますか"
    at = [a for a, _t in searcher.asked]
    assert at[1] - at[0] >= DEBOUNCE * 0.9 and at[3] - at[2] >= DEBOUNCE * 0.9
    # the phone number never reached the search; the window moved on
    assert "住民票" not in texts[2] and "ゼロ" not in texts[2], texts[2]
    assert not re.search(r"[0-9０-９一二三四五六七八九]{3,}", texts[2] + texts[3]), texts
    # what the console got: the right item first, with the words that matched
    assert len(published) == 3, published
    for items in published[:2]:
        assert names[items[0]["item_id"]] == "住民票の写しはどこで取得できますか。"
        assert items[0]["title"] == names[items[0]["item_id"]]
        assert any("住民票" in w for w in items[0]["matched"]), items[0]
    last = published[-1][0]
    assert names[last["item_id"]] == "マイナンバーカードの暗証番号を忘れました。"
    assert any("暗証番号" in w for w in last["matched"]), last
    assert all(0 < s["score"] <= 1.0 for items in published for s in items)
    # and the consoles were told, without text
    client = redis.Redis.from_url(jp_settings.redis.url)
    try:
        events = [decode(body) for _sid, body in read_events(
            client, Keys(jp_settings.redis.prefix))]
    finally:
        client.close()
    updates = [e.payload() for e in events if e.type == "transcript.updated"]
    assert [u["what"] for u in updates].count("suggestions") >= 2
    assert all("住民票" not in json.dumps(u, ensure_ascii=False) for u in updates)
