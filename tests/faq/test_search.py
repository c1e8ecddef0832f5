"""Search ranking on a fixed small set (typed queries and raw transcripts), filtering,
highlighting, and the index rebuilt by the real rq job from published items."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import redis
from rq import Queue, SimpleWorker
from sqlalchemy.orm import Session, sessionmaker

from common.bus import read_events
from common.db import transaction
from common.events import decode
from common.faq_events import FaqIndexRebuilt
from common.keys import Keys
from faq import jobs, services, store
from faq.content import Actor, Content
from faq.search import Encoder, IndexedItem, SearchIndex
from faq.textnorm import normalize, segments

from .conftest import publish_new

ITEMS = [
    IndexedItem(1, 1, None, "both", "faq", "住民票の写しの手数料はいくらですか。",
                keywords=("住民票=じゅうみんひょう", "手数料=料金=いくら")),
    IndexedItem(2, 2, None, "both", "faq", "マイナンバーカードの暗証番号を忘れました。",
                keywords=("マイナンバーカード=マイナカード", "暗証番号=パスワード")),
    IndexedItem(3, 3, None, "both", "faq", "市外へ引っ越すときの手続きを教えてください。",
                keywords=("転出=引っ越し", "市外")),
    IndexedItem(4, 4, None, "both", "faq", "印鑑登録をするには何が必要ですか。",
                keywords=("印鑑登録=実印=はんこ",)),
    IndexedItem(5, 5, None, "both", "faq", "戸籍謄本を郵送で取り寄せることはできますか。",
                keywords=("戸籍", "郵送=郵便")),
    IndexedItem(6, 6, "city", "kiosk", "faq", "リモート窓口では何ができますか。",
                keywords=("リモート窓口=窓口端末",)),
    IndexedItem(7, 7, "other-town", "both", "faq", "住民票の写しはどこで取れますか（隣町）。",
                keywords=("住民票",)),
]

RANKING = [
    ("住民票の料金", 1),
    ("えー あの 住民票 って いくら かかります か", 1),
    ("マイナカード の パスワード 忘れちゃった ん です けど", 2),
    ("あのー 引っ越し で 市外 に 出る ん です けど", 3),
    ("はんこ の 登録 を したい", 4),
    ("戸籍 を 郵便 で 送って ほしい", 5),
]


def test_transcript_normalisation() -> None:
    assert segments("えー あの 住民票 の 写し") == ["住民票", "の", "写し"]
    assert normalize("あのマイナンバーカード、ください。") == "マイナンバーカードください"
    assert normalize("ＡＢＣ　１２３") == "abc123"


@pytest.mark.parametrize(("query", "expected"), RANKING)
def test_lexical_ranking(query: str, expected: int) -> None:
    index = SearchIndex.build(ITEMS, None)
    results = index.suggest(query, tenant="city", channel="phone", k=3)
    assert results[0].item_id == expected


@pytest.mark.parametrize(("query", "expected"), RANKING)
def test_fused_ranking(encoder: Encoder, query: str, expected: int) -> None:
    index = SearchIndex.build(ITEMS, encoder)
    results = index.suggest(query, tenant="city", channel="phone", k=3)
    assert results[0].item_id == expected
    assert results[0].semantic > 0


def test_tenant_and_channel_filters_and_highlights() -> None:
    index = SearchIndex.build(ITEMS, None)
    phone = index.suggest("住民票", tenant="city", channel="phone", k=10)
    assert 7 not in {r.item_id for r in phone}  # another municipality's item
    assert {r.item_id for r in index.suggest("住民票", tenant="other-town", k=10)} >= {1, 7}
    phone_ids = {r.item_id for r in index.suggest("リモート窓口", tenant="city", channel="phone")}
    assert 6 not in phone_ids  # kiosk-only item
    assert index.suggest("リモート窓口", tenant="city", channel="kiosk")[0].item_id == 6
    top = index.suggest("えー 住民票 の 料金", tenant="city")[0]
    assert "住民票" in top.matched_terms
    assert index.suggest("   ", tenant="city") == []
    assert SearchIndex.build([], None).suggest("住民票", tenant="city") == []


def _settings_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, db_url: str,
                  redis_url: str) -> None:
    monkeypatch.setenv("MADOGUCHI_DATABASE__URL", db_url)
    monkeypatch.setenv("MADOGUCHI_REDIS__URL", redis_url)
    monkeypatch.setenv("MADOGUCHI_SITE__DATA_DIR", str(tmp_path / "data"))


def test_publish_queues_reindex_job_and_searchers_pick_it_up(
        factory: sessionmaker[Session], db_url: str, redis_url: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, editor: Actor, approver: Actor,
        encoder: Encoder) -> None:
    _settings_env(monkeypatch, tmp_path, db_url, redis_url)
    client = redis.Redis.from_url(redis_url)
    keys = Keys("mado")
    queue = Queue(jobs.QUEUE, connection=client)
    searcher = store.FaqSearch(client, encoder, check_interval=0.0)
    assert searcher.suggest("住民票", tenant="city") == []  # nothing built yet

    with transaction(factory) as s:
        c = services.create_item(s, editor, Content.make(
            "住民票の写しの手数料はいくらですか。", "1通300円です。", keywords="住民票|手数料"))
        v = services.submit(s, editor, c.item.id, expected_version=c.item.version).item.version
        v = services.approve(s, approver, c.item.id, expected_version=v).item.version
        change = services.publish(s, approver, c.item.id, expected_version=v)
    with transaction(factory) as s:  # a draft that must not reach the index
        services.create_item(s, editor, Content.make("下書きだけの質問", "下書きの回答"))
    job_id = jobs.after_commit(client, keys, change.events, queue)
    assert job_id is not None
    assert SimpleWorker([queue], connection=client).work(burst=True)
    job = queue.fetch_job(job_id)
    assert job is not None and job.is_finished, job.exc_info if job else None
    assert job.return_value()["items"] == 1

    searcher.refresh(wait=True)
    results = searcher.suggest("えー 住民票 いくら です か", tenant="city", channel="phone")
    assert [r.item_id for r in results] == [c.item.id]
    assert {r.item_id for r in searcher.suggest("下書きだけの質問", tenant="city")} <= {c.item.id}
    events = [decode(body) for _sid, body in read_events(client, keys)]
    assert any(isinstance(e, FaqIndexRebuilt) and e.items == 1 for e in events)
    client.close()


def test_search_serves_old_index_until_new_generation_loaded(
        redis_url: str, encoder: Encoder, monkeypatch: pytest.MonkeyPatch) -> None:
    client = redis.Redis.from_url(redis_url)
    store.build_and_store(client, ITEMS[:1], encoder)
    searcher = store.FaqSearch(client, encoder, check_interval=0.0)
    searcher.refresh(wait=True)
    first = searcher.generation
    before = [r.item_id for r in searcher.suggest("暗証番号", tenant="city")]
    gen2, _ = store.build_and_store(client, ITEMS, encoder)  # e.g. by the job on a worker
    # the background reload is held until the search below has answered
    release = threading.Event()
    real_load = store.load_index

    def held_load(*args: Any, **kwargs: Any) -> SearchIndex | None:
        assert release.wait(30), "the reload was never released"
        return real_load(*args, **kwargs)

    monkeypatch.setattr(store, "load_index", held_load)
    # the next search answers at once from what it has, and starts a background reload
    assert [r.item_id for r in searcher.suggest("暗証番号", tenant="city")] == before
    assert searcher.generation == first
    release.set()
    searcher.wait_loaded(30)
    assert searcher.generation == gen2 != first
    assert searcher.suggest("暗証番号 忘れた", tenant="city")[0].item_id == 2
    # the unchanged item's vector came from the cache: only new texts were encoded
    cached = client.hlen(store.IndexKeys().embeddings(encoder.name))
    assert cached == len(ITEMS)
    client.close()


def test_index_from_database_published_only(factory: sessionmaker[Session], editor: Actor,
                                            approver: Actor) -> None:
    live = publish_new(factory, editor, approver,
                       Content.make("印鑑証明の手数料は？", "1通300円です。", channels="phone"))
    with transaction(factory) as s:
        services.create_item(s, editor, Content.make("未公開の質問", "未公開の回答"))
    with factory() as s:
        items = jobs.published_index_items(s)
    assert [(it.id, it.channels, it.snippet) for it in items] == [(live, "phone", "1通300円です。")]
