"""CSV (UTF-8 with BOM) and Excel import/export: round trips, all-or-nothing imports,
bad files reported with line numbers."""

from __future__ import annotations

import csv
import io

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from common.db import transaction
from common.models.faq import FaqItem
from faq import seed, services, transfer
from faq.content import Actor
from faq.exceptions import ImportFailed, PermissionDenied

HEADER = "ID,版,対象団体,カテゴリ,担当課,質問,回答,関連手続,キーワード,チャネル,変更理由\r\n"


def _csv(*rows: str, header: str = HEADER) -> bytes:
    return (header + "".join(r + "\r\n" for r in rows)).encode("utf-8-sig")


def _count(factory: sessionmaker[Session]) -> int:
    with factory() as s:
        return int(s.scalar(select(func.count()).select_from(FaqItem)) or 0)


def _read_csv(data: bytes) -> list[dict[str, str]]:
    assert data.startswith(b"\xef\xbb\xbf"), "exports start with a UTF-8 BOM"
    return list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"))))


def test_sample_content_loads_as_drafts(factory: sessionmaker[Session], admin: Actor,
                                        approver: Actor) -> None:
    with transaction(factory) as s:
        result = seed.load_sample(s, admin)
    assert len(result.created) >= 150
    with factory() as s:
        items = services.list_items(s, approver)
        assert {i.status for i in items} == {"draft"}
        assert all(i.tenant is None for i in items)
        assert services.list_published(s, tenant="city") == []  # nothing live unapproved
        assert "サンプル" in items[0].head.reason


def test_csv_round_trip(factory: sessionmaker[Session], editor: Actor, approver: Actor) -> None:
    data = _csv(",,,住民票,住民記録係,住民票の手数料は？,1通300円です。,住民票の写しの交付,"
                "住民票|手数料=料金,両方,新規",
                ',,,戸籍,戸籍係,"戸籍謄本は、どこで取れますか。","本籍地の市区町村で取れます。\n'
                '広域交付もあります。",,戸籍|謄本,電話,新規')
    with transaction(factory) as s:
        result = transfer.import_csv(s, editor, data)
    assert len(result.created) == 2
    with factory() as s:
        exported = transfer.export_csv(s, editor, scope="working")
    rows = _read_csv(exported)
    assert [r["質問"] for r in rows] == ["住民票の手数料は？", "戸籍謄本は、どこで取れますか。"]
    assert rows[1]["回答"] == "本籍地の市区町村で取れます。\n広域交付もあります。"
    assert rows[0]["キーワード"] == "住民票|手数料=料金"
    assert rows[1]["チャネル"] == "電話"
    assert rows[0]["状態"] == "下書き"
    # the unchanged file changes nothing; one edited answer makes one new revision
    with transaction(factory) as s:
        again = transfer.import_csv(s, editor, exported)
    assert (again.created, again.revised, len(again.unchanged)) == ((), (), 2)
    edited = exported.decode("utf-8-sig").replace("1通300円です。",
                                                  "1通300円、コンビニは200円です。")
    with transaction(factory) as s:
        third = transfer.import_csv(s, editor, edited.encode("utf-8-sig"))
    assert len(third.revised) == 1
    with factory() as s:
        hist = services.history(s, editor, third.revised[0])
    assert [r.number for r in hist] == [1, 2]
    assert hist[1].content.body == "1通300円、コンビニは200円です。"


def test_excel_round_trip(factory: sessionmaker[Session], admin: Actor) -> None:
    with transaction(factory) as s:
        seed.load_sample(s, admin)
    with factory() as s:
        book = transfer.export_xlsx(s, admin, scope="working")
        csv_rows = _read_csv(transfer.export_csv(s, admin, scope="working"))
    from openpyxl import load_workbook
    wb = load_workbook(io.BytesIO(book))
    assert wb.sheetnames == ["FAQ", "列の説明"]
    assert [c.value for c in wb["FAQ"][1]][:7] == ["ID", "版", "状態", "対象団体", "カテゴリ",
                                                   "担当課", "質問"]
    rows = transfer.parse_xlsx(book)
    assert len(rows) == len(csv_rows)
    assert rows[0].values["question"] == csv_rows[0]["質問"]
    with transaction(factory) as s:
        result = transfer.import_xlsx(s, admin, book)
    assert result.created == () and result.revised == ()
    assert len(result.unchanged) == len(csv_rows)


def test_bad_row_refuses_whole_file_with_line_numbers(factory: sessionmaker[Session],
                                                      editor: Actor) -> None:
    data = _csv(",,,住民票,係,良い質問1,良い回答,,,両方,新規",
                ",,,住民票,係,,回答だけ,,,両方,新規",
                ",,,住民票,係,良い質問2,良い回答,,,ファクス,新規",
                ",,,住民票,係,良い質問1,重複,,,両方,新規",
                "abc,,,住民票,係,質問X,回答X,,,両方,新規",
                "999,,,住民票,係,質問Y,回答Y,,,両方,新規")
    with transaction(factory) as s, pytest.raises(ImportFailed) as err:
        transfer.import_csv(s, editor, data)
    by_line = {line: reason for line, _col, reason in err.value.errors}
    assert "質問が空です" in by_line[3]
    assert "ファクス" in by_line[4] and "両方・電話・窓口端末" in by_line[4]
    assert "2行目" in by_line[5]
    assert "数字ではありません" in by_line[6]
    assert "ID 999" in by_line[7]
    assert 2 not in by_line
    assert "1件も登録していません" in err.value.message
    assert "4行目（チャネル）" in err.value.message
    assert _count(factory) == 0


def test_stale_row_is_refused(factory: sessionmaker[Session], editor: Actor) -> None:
    with transaction(factory) as s:
        transfer.import_csv(s, editor, _csv(",,,c,d,質問A,回答A,,,両方,新規"))
    with factory() as s:
        exported = transfer.export_csv(s, editor, scope="working")
    with transaction(factory) as s:  # someone edits after the export
        view = services.list_items(s, editor)[0]
        services.revise(s, editor, view.id, view.head.content.__class__.make("質問A", "別案"),
                        expected_version=view.version, reason="別の人の修正")
    changed = exported.decode("utf-8-sig").replace("回答A", "回答A改")
    with transaction(factory) as s, pytest.raises(ImportFailed) as err:
        transfer.import_csv(s, editor, changed.encode("utf-8-sig"))
    assert err.value.errors[0][0] == 2
    assert "書き出した後に更新されています" in err.value.errors[0][2]


@pytest.mark.parametrize(("data", "expected"), [
    (b"", "ファイルが空です"),
    ("質問,回答,色\r\nq,a,赤\r\n".encode("utf-8-sig"), "知らない列名があります: 色"),
    ("ID,質問\r\n,q\r\n".encode("utf-8-sig"), "必須の列がありません: 回答"),
    ("質問,回答\r\n".encode("utf-8-sig"), "取り込む行がありません"),
    ('質問,回答\r\n"閉じていない,a\r\n'.encode("utf-8-sig"), "1件も登録していません"),
    ("質問,回答\r\nq,a,余分\r\n".encode("utf-8-sig"), "列が多すぎます"),
])
def test_bad_csv_files(factory: sessionmaker[Session], editor: Actor, data: bytes,
                       expected: str) -> None:
    with transaction(factory) as s, pytest.raises(ImportFailed) as err:
        transfer.import_csv(s, editor, data)
    assert expected in err.value.message
    assert _count(factory) == 0


def test_shift_jis_csv_from_excel_is_accepted(factory: sessionmaker[Session],
                                              editor: Actor) -> None:
    data = "質問,回答,チャネル\r\n印鑑証明の手数料は？,1通300円です。,電話\r\n".encode("cp932")
    with transaction(factory) as s:
        result = transfer.import_csv(s, editor, data)
        view = services.get_item(s, editor, result.created[0])
    assert view.head.content.title == "印鑑証明の手数料は？"
    assert view.head.content.channels == "phone"


def test_bad_excel_file_and_roles(factory: sessionmaker[Session], editor: Actor,
                                  operator: Actor) -> None:
    with transaction(factory) as s, pytest.raises(ImportFailed, match="Excel"):
        transfer.import_xlsx(s, editor, b"PK\x03\x04 not really a workbook")
    with transaction(factory) as s, pytest.raises(PermissionDenied):
        transfer.import_csv(s, operator, _csv(",,,c,d,q,a,,,両方,r"))
    with transaction(factory) as s, pytest.raises(ImportFailed, match="共通"):
        transfer.import_csv(s, editor, _csv(",,共通,c,d,q,a,,,両方,r"))
