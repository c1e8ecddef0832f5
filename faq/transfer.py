"""Import and export of FAQ items as CSV (UTF-8 with BOM) and Excel (.xlsx).

Columns (the header row may use the Japanese label or the English key; order is free):

=========  ==========  ================================================================
key        label       meaning
=========  ==========  ================================================================
id         ID          empty = new item; a number = a new revision of that item
version    版          with ``id``: the item version the file was exported at (optimistic
                       lock; a row whose item changed since is refused)
status     状態        export only (ignored on import)
tenant     対象団体    empty = the importing user's municipality; 共通 = shared by all
category   カテゴリ    free text (e.g. 住民票)
department 担当課      free text (e.g. 住民記録係)
question   質問        required
answer     回答        required; links as [label](https://...)
procedures 関連手続    separated by | (or 、)
keywords   キーワード  separated by |; synonyms joined with = (マイナカード=マイナンバーカード)
channels   チャネル    両方 / 電話 / 窓口端末 (or both / phone / kiosk); empty = 両方
reason     変更理由    why the change is made (recorded in the revision)
=========  ==========  ================================================================

An import is all-or-nothing: every row is checked first, and any bad row refuses the
whole file with ``ImportFailed`` listing line numbers and reasons. Imported rows become
drafts (or new draft revisions) that still need the city's approval; rows identical to
the item's current content are skipped. CSV files saved by Japanese Excel as Shift_JIS
(cp932) are accepted too.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from zipfile import BadZipFile

from openpyxl import Workbook, load_workbook
from openpyxl.styles import Alignment, Font
from sqlalchemy import select
from sqlalchemy.orm import Session

from common.events import Event
from common.models.faq import FaqItem, FaqRevision
from faq import services
from faq.content import (
    ADMINISTRATOR,
    CHANNEL_LABELS,
    DRAFTING_ROLES,
    READING_ROLES,
    Actor,
    Content,
)
from faq.exceptions import FaqError, ImportFailed, PermissionDenied

COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("id", "ID", "空欄=新規。番号=その項目の新しい版"),
    ("version", "版", "IDを指定した行: 書き出した時点の版（他の人の更新を検出します）"),
    ("status", "状態", "書き出し専用（取り込み時は無視）"),
    ("tenant", "対象団体", "空欄=自分の団体。「共通」=全団体共通"),
    ("category", "カテゴリ", "例: 住民票"),
    ("department", "担当課", "例: 住民記録係"),
    ("question", "質問", "必須"),
    ("answer", "回答", "必須。リンクは [表示名](https://...)"),
    ("procedures", "関連手続", "| で区切る"),
    ("keywords", "キーワード",
     "| で区切る。同義語は = でつなぐ（例: マイナカード=マイナンバーカード）"),
    ("channels", "チャネル", "両方 / 電話 / 窓口端末（空欄=両方）"),
    ("reason", "変更理由", "変更の理由（履歴に残ります）"),
)
LABELS = {key: label for key, label, _ in COLUMNS}
_HEADER_TO_KEY = {**{label: key for key, label, _ in COLUMNS},
                  **{key: key for key, _, _ in COLUMNS}}
REQUIRED = ("question", "answer")
SHARED_LABELS = ("共通", "shared", "*")
_CHANNEL_IN = {"": "both", "both": "both", "両方": "both", "phone": "phone", "電話": "phone",
               "kiosk": "kiosk", "窓口端末": "kiosk", "端末": "kiosk", "リモート窓口": "kiosk"}
MAX_ROWS = 20000


@dataclass(frozen=True)
class ImportResult:
    created: tuple[int, ...] = ()
    revised: tuple[int, ...] = ()
    unchanged: tuple[int, ...] = ()
    events: tuple[Event, ...] = field(default_factory=tuple)


@dataclass
class _Row:
    line: int
    values: dict[str, str]


# --------------------------------------------------------------------- export


def export_rows(session: Session, actor: Actor, *,
                scope: str = "published") -> list[dict[str, str]]:
    """Rows (keyed by column key) of the actor's tenant and shared items.

    ``scope="published"``: live content only (anyone with a role); ``"working"``: the
    latest revision of every item, including drafts (editing/approving roles only).
    """
    if scope == "working":
        if not actor.roles.intersection(READING_ROLES):
            raise PermissionDenied("下書きを含む書き出しには編集者または承認者の権限が必要です。")
        rows = []
        for view in services.list_items(session, actor, kind="faq"):
            rows.append(_row(view.id, view.version, view.head.status, view.tenant,
                             view.head.content, view.head.reason))
        return rows
    if scope != "published":
        raise FaqError(f"scope は published か working です（指定: {scope!r}）。")
    versions = {i: v for i, v in session.execute(select(FaqItem.id, FaqItem.version))}
    return [_row(p.id, versions.get(p.id, 0), "published", p.tenant, p.content, "")
            for p in services.list_published(session, tenant=actor.tenant, kind="faq")]


def _row(item_id: int, version: int, status: str, tenant: str | None, c: Content,
         reason: str) -> dict[str, str]:
    return {
        "id": str(item_id), "version": str(version),
        "status": services.STATUS_LABELS.get(status, status),
        "tenant": "共通" if tenant is None else tenant,
        "category": c.category, "department": c.department, "question": c.title,
        "answer": c.body, "procedures": "|".join(c.procedures),
        "keywords": "|".join(c.keywords), "channels": CHANNEL_LABELS.get(c.channels, c.channels),
        "reason": reason,
    }


def rows_to_csv(rows: Iterable[dict[str, str]]) -> bytes:
    """UTF-8 with BOM and CRLF, the form Excel opens without garbling Japanese."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow([label for _, label, _ in COLUMNS])
    for row in rows:
        writer.writerow([row.get(key, "") for key, _, _ in COLUMNS])
    return buf.getvalue().encode("utf-8-sig")


def rows_to_xlsx(rows: Iterable[dict[str, str]]) -> bytes:
    wb = Workbook()
    ws = wb.active
    assert ws is not None  # nosec B101 # type narrowing, not a check
    ws.title = "FAQ"
    ws.append([label for _, label, _ in COLUMNS])
    for cell in ws[1]:
        cell.font = Font(bold=True)
    for row in rows:
        ws.append([row.get(key, "") for key, _, _ in COLUMNS])
    widths = {"question": 40, "answer": 60, "keywords": 30, "procedures": 24}
    for n, (key, _, _) in enumerate(COLUMNS, 1):
        letter = ws.cell(row=1, column=n).column_letter
        ws.column_dimensions[letter].width = widths.get(key, 12)
        if key in ("answer", "question"):
            for cell in ws[letter][1:]:
                cell.alignment = Alignment(wrap_text=True, vertical="top")
    ws.freeze_panes = "A2"
    help_ws = wb.create_sheet("列の説明")
    help_ws.append(["列名", "英語キー", "説明"])
    for key, label, text in COLUMNS:
        help_ws.append([label, key, text])
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


def export_csv(session: Session, actor: Actor, *, scope: str = "published") -> bytes:
    return rows_to_csv(export_rows(session, actor, scope=scope))


def export_xlsx(session: Session, actor: Actor, *, scope: str = "published") -> bytes:
    return rows_to_xlsx(export_rows(session, actor, scope=scope))


# --------------------------------------------------------------------- parsing


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("cp932")
    except UnicodeDecodeError:
        raise ImportFailed([(1, "", "文字コードを読み取れません。Excel では"
                                    "「CSV UTF-8（コンマ区切り）」で保存してください")]) from None


def parse_csv(data: bytes) -> list[_Row]:
    text = _decode(data)
    reader = csv.reader(io.StringIO(text, newline=""))
    rows: list[_Row] = []
    try:
        header = next(reader, None)
        if header is None:
            raise ImportFailed([(1, "", "ファイルが空です。"
                                        "1行目に列名（質問、回答など）を入れてください")])
        keys = _header_keys(header)
        start = reader.line_num + 1
        for raw in reader:
            line = start
            start = reader.line_num + 1
            if not any(cell.strip() for cell in raw):
                continue
            if len(raw) > len(keys):
                raise ImportFailed([(line, "", f"列が多すぎます（見出しは{len(keys)}列、この行は"
                                               f"{len(raw)}列）。セル内のカンマや引用符を確認してください")])
            values = {k: (raw[i] if i < len(raw) else "") for i, k in enumerate(keys) if k}
            rows.append(_Row(line, values))
            if len(rows) > MAX_ROWS:
                raise ImportFailed([(line, "",
                                     f"行が多すぎます。{MAX_ROWS}行以内に分けてください")])
    except csv.Error as exc:
        raise ImportFailed([(reader.line_num, "", f"CSVとして読めません: {exc}")]) from None
    return rows


def parse_xlsx(data: bytes) -> list[_Row]:
    try:
        wb = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except (BadZipFile, KeyError, ValueError, OSError) as exc:
        raise ImportFailed([(1, "", f"Excel ファイル（.xlsx）として読めません: {exc}")]) from None
    ws = wb["FAQ"] if "FAQ" in wb.sheetnames else wb.worksheets[0]
    rows: list[_Row] = []
    keys: list[str | None] = []
    for n, raw in enumerate(ws.iter_rows(values_only=True), 1):
        cells = ["" if v is None else (str(int(v)) if isinstance(v, float) and v.is_integer()
                                       else str(v)) for v in raw]
        if n == 1:
            keys = _header_keys(cells)
            continue
        if not any(c.strip() for c in cells):
            continue
        values = {k: (cells[i] if i < len(cells) else "") for i, k in enumerate(keys) if k}
        rows.append(_Row(n, values))
        if len(rows) > MAX_ROWS:
            raise ImportFailed([(n, "", f"行が多すぎます。{MAX_ROWS}行以内に分けてください")])
    wb.close()
    return rows


def _header_keys(header: Sequence[str]) -> list[str | None]:
    keys: list[str | None] = []
    unknown = []
    for cell in header:
        name = cell.strip().lstrip("\ufeff")
        if not name:
            keys.append(None)
            continue
        key = _HEADER_TO_KEY.get(name) or _HEADER_TO_KEY.get(name.lower())
        if key is None:
            unknown.append(name)
        if key in keys:
            raise ImportFailed([(1, name, "同じ列が2回あります。1つにしてください")])
        keys.append(key)
    errors = []
    if unknown:
        known = "、".join(label for _, label, _ in COLUMNS)
        errors.append((1, "", f"知らない列名があります: {'、'.join(unknown)}"
                              f"（使える列名: {known}）"))
    missing = [LABELS[k] for k in REQUIRED if k not in keys]
    if missing:
        errors.append((1, "", f"必須の列がありません: {'、'.join(missing)}"))
    if errors:
        raise ImportFailed(errors)
    return keys


# --------------------------------------------------------------------- import


def import_csv(session: Session, actor: Actor, data: bytes, *, requested_by_city: bool = True,
               default_reason: str = "一括取り込み") -> ImportResult:
    return import_rows(session, actor, parse_csv(data), requested_by_city=requested_by_city,
                       default_reason=default_reason)


def import_xlsx(session: Session, actor: Actor, data: bytes, *, requested_by_city: bool = True,
                default_reason: str = "一括取り込み") -> ImportResult:
    return import_rows(session, actor, parse_xlsx(data), requested_by_city=requested_by_city,
                       default_reason=default_reason)


@dataclass(frozen=True)
class _Planned:
    """A checked row: what to write for it."""

    row: _Row
    item_id: int | None  # None: a new item
    tenant: str | None  # "" = the importer's municipality, None = shared
    content: Content
    reason: str


_Errors = list[tuple[int, str, str]]  # (line, column label, message)


def import_rows(session: Session, actor: Actor, rows: list[_Row], *,
                requested_by_city: bool = True,
                default_reason: str = "一括取り込み") -> ImportResult:
    """Check every row, then write all of them as drafts inside one savepoint."""
    if not actor.roles.intersection(DRAFTING_ROLES):
        raise PermissionDenied("取り込みには編集者・監督者・管理者のいずれかの権限が必要です。")
    if not rows:
        raise ImportFailed([(2, "", "取り込む行がありません")])
    errors: _Errors = []
    plan: list[_Planned] = []
    seen_ids: dict[int, int] = {}
    seen_questions: dict[str, int] = {}
    for row in rows:
        plan.append(_check_row(session, actor, row, errors, seen_ids, seen_questions,
                               default_reason))
    if errors:
        raise ImportFailed(errors)
    return _write(session, actor, plan, requested_by_city)


def _check_row(session: Session, actor: Actor, row: _Row, errors: _Errors,
               seen_ids: dict[int, int], seen_questions: dict[str, int],
               default_reason: str) -> _Planned:
    """Check one row against its cells, the earlier rows and the database; append what is
    wrong to ``errors``."""
    v = {k: (val or "").strip() for k, val in row.values.items()}
    before = len(errors)
    item_id = _number(v, "id", row.line, errors)
    if item_id is not None:
        if item_id in seen_ids:
            errors.append((row.line, LABELS["id"],
                           f"ID {item_id} が {seen_ids[item_id]}行目と重複しています"))
        seen_ids[item_id] = row.line
    version = _number(v, "version", row.line, errors)
    tenant = _tenant(v.get("tenant", ""), actor, row.line, errors)
    channel = _CHANNEL_IN.get(v.get("channels", "").lower())
    if channel is None:
        errors.append((row.line, LABELS["channels"],
                       f"「{v.get('channels')}」は使えません。両方・電話・窓口端末のいずれかに"
                       "してください"))
        channel = "both"
    for key in REQUIRED:
        if not v.get(key):
            errors.append((row.line, LABELS[key], f"{LABELS[key]}が空です"))
    content = Content.make(v.get("question", ""), v.get("answer", ""),
                           category=v.get("category", ""),
                           department=v.get("department", ""),
                           procedures=v.get("procedures", ""),
                           keywords=v.get("keywords", ""), channels=channel)
    if len(errors) == before:
        try:
            content.validate("faq")
        except FaqError as exc:
            errors.extend((row.line, "", p) for p in exc.details.get("problems", [exc.message]))
    q = content.title
    if q and item_id is None:
        if q in seen_questions:
            errors.append((row.line, LABELS["question"],
                           f"同じ質問が {seen_questions[q]}行目にもあります"))
        seen_questions[q] = row.line
    if item_id is not None and len(errors) == before:
        errors.extend((row.line, label, message) for label, message
                      in _revision_problems(session, actor, item_id, version, content))
    return _Planned(row, item_id, tenant, content, v.get("reason") or default_reason)


def _number(v: dict[str, str], key: str, line: int, errors: _Errors) -> int | None:
    """The whole number in cell ``key`` (``id``, ``version``), None when it is empty."""
    if not v.get(key):
        return None
    try:
        return int(v[key])
    except ValueError:
        errors.append((line, LABELS[key], f"{LABELS[key]} {v[key]!r} は数字ではありません"))
        return None


def _tenant(cell: str, actor: Actor, line: int, errors: _Errors) -> str | None:
    """The row's municipality: "" = the importer's, None = shared by all (administrators
    only); another municipality's is refused."""
    tenant: str | None = "" if not cell else (None if cell in SHARED_LABELS else cell)
    if tenant is None and ADMINISTRATOR not in actor.roles:
        errors.append((line, LABELS["tenant"], "「共通」の項目は管理者だけが取り込めます"))
    elif tenant not in ("", None, actor.tenant):
        errors.append((line, LABELS["tenant"],
                       f"他の団体（{tenant}）の項目は取り込めません。空欄か {actor.tenant} に"
                       "してください"))
    return tenant


def _revision_problems(session: Session, actor: Actor, item_id: int, version: int | None,
                       content: Content) -> list[tuple[str, str]]:
    """Why a row cannot become a new revision of item ``item_id`` ((label, message))."""
    item = session.get(FaqItem, item_id)
    if item is None or item.kind != "faq":
        return [(LABELS["id"], f"ID {item_id} のFAQ項目はありません。"
                               "新規にするにはIDを空欄にしてください")]
    if item.tenant_id not in (None, actor.tenant):
        return [(LABELS["id"], f"ID {item_id} は他の団体の項目です")]
    if version is not None and item.version != version:
        return [(LABELS["version"], f"ID {item_id} は書き出した後に更新されています"
                                    f"（ファイルの版 {version}、現在 {item.version}）。"
                                    "書き出し直して編集してください")]
    head = session.get(FaqRevision, item.head_revision_id or 0)
    if head is not None and head.status in services.PENDING \
            and Content.from_row(head) != content:
        return [(LABELS["id"], f"ID {item_id} は承認待ちです。差し戻されるまで変更できません")]
    return []


def _write(session: Session, actor: Actor, plan: list[_Planned],
           requested_by_city: bool) -> ImportResult:
    """Write the checked rows inside one savepoint: all of them or, on any error, none."""
    created: list[int] = []
    revised: list[int] = []
    unchanged: list[int] = []
    events: list[Event] = []
    nested = session.begin_nested()
    try:
        for p in plan:
            try:
                if p.item_id is None:
                    change = services.create_item(session, actor, p.content, tenant=p.tenant,
                                                  reason=p.reason,
                                                  requested_by_city=requested_by_city)
                    created.append(change.item.id)
                else:
                    item = session.get(FaqItem, p.item_id)
                    assert item is not None  # nosec B101 # type narrowing, not a check
                    head = session.get(FaqRevision, item.head_revision_id or 0)
                    if head is not None and Content.from_row(head) == p.content:
                        unchanged.append(p.item_id)
                        continue
                    change = services.revise(session, actor, p.item_id, p.content,
                                             expected_version=item.version, reason=p.reason,
                                             requested_by_city=requested_by_city)
                    revised.append(p.item_id)
                events.extend(change.events)
            except FaqError as exc:
                raise ImportFailed([(p.row.line, "", exc.message)]) from None
    except BaseException:
        nested.rollback()
        raise
    nested.commit()
    return ImportResult(created=tuple(created), revised=tuple(revised),
                        unchanged=tuple(unchanged), events=tuple(events))


def column_help() -> list[dict[str, Any]]:
    """The documented columns, for a help page or template download."""
    return [{"key": k, "label": label, "help": text} for k, label, text in COLUMNS]
