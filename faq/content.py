"""Actors, roles and the content of one revision (validated, comparable, diffable)."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Any

from faq.exceptions import InvalidContent

# Roles the FAQ base knows. The web layer maps its accounts onto these names.
APPROVER = "approver"  # the city's approver: approves, returns, acknowledges
EDITOR = "editor"
SUPERVISOR = "supervisor"
ADMINISTRATOR = "administrator"
OPERATOR = "operator"

DRAFTING_ROLES = frozenset({EDITOR, SUPERVISOR, ADMINISTRATOR})
PUBLISHING_ROLES = frozenset({APPROVER, SUPERVISOR, ADMINISTRATOR})
READING_ROLES = DRAFTING_ROLES | {APPROVER}

KINDS = ("faq", "manual")
CHANNELS = ("phone", "kiosk", "both")
MANUAL_TYPES = ("operation", "troubleshooting", "operator")
CHANNEL_LABELS = {"phone": "電話", "kiosk": "窓口端末", "both": "両方"}
MANUAL_TYPE_LABELS = {
    "operation": "操作マニュアル",
    "troubleshooting": "トラブル対応マニュアル",
    "operator": "オペレーター対応マニュアル",
}

_LIST_SPLIT = re.compile(r"[|｜、,，;；\n]+")


@dataclass(frozen=True)
class Actor:
    """Who acts: the user id, their roles and the tenant (municipality) they belong to."""

    user_id: str
    roles: frozenset[str]
    tenant: str

    def has(self, *roles: str) -> bool:
        return bool(self.roles.intersection(roles))


def split_list(value: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """'a|b、c' or a list -> ['a', 'b', 'c'] (trimmed, empties dropped, order kept)."""
    if value is None:
        return []
    parts = value if isinstance(value, list | tuple) else _LIST_SPLIT.split(value)
    out: list[str] = []
    for part in parts:
        text = str(part).strip()
        if text and text not in out:
            out.append(text)
    return out


@dataclass(frozen=True)
class Content:
    """The content of one FAQ item or manual revision.

    FAQ: ``title`` is the question, ``body`` the answer (Markdown-like rich text; links
    as ``[label](https://...)``). Manual: ``title`` is the document title, ``sections``
    the ordered sections, ``manual_type`` one of MANUAL_TYPES. ``keywords`` may hold
    synonym groups written ``マイナンバーカード=マイナカード=個人番号カード``.
    """

    title: str
    body: str = ""
    category: str = ""
    department: str = ""
    procedures: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()
    channels: str = "both"
    manual_type: str = ""
    sections: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    @classmethod
    def make(cls, title: str, body: str = "", *, category: str = "", department: str = "",
             procedures: str | list[str] | tuple[str, ...] | None = None,
             keywords: str | list[str] | tuple[str, ...] | None = None,
             channels: str = "both", manual_type: str = "",
             sections: list[tuple[str, str]] | list[dict[str, str]] | None = None) -> Content:
        secs: list[tuple[str, str]] = []
        for sec in sections or []:
            if isinstance(sec, dict):
                secs.append((str(sec.get("heading", "")), str(sec.get("body", ""))))
            else:
                secs.append((str(sec[0]), str(sec[1])))
        return cls(
            title=title.strip(), body=body.strip(), category=category.strip(),
            department=department.strip(), procedures=tuple(split_list(procedures)),
            keywords=tuple(split_list(keywords)), channels=channels.strip() or "both",
            manual_type=manual_type.strip(), sections=tuple(secs),
        )

    def validate(self, kind: str) -> None:
        problems: list[str] = []
        if kind not in KINDS:
            problems.append(f"種別は {'/'.join(KINDS)} のいずれかです（指定: {kind!r}）")
        if not self.title:
            problems.append("質問（マニュアルは表題）が空です。入力してください")
        elif len(self.title) > 500:
            problems.append(f"質問が長すぎます（{len(self.title)}文字）。500文字以内にしてください")
        if kind == "faq" and not self.body:
            problems.append("回答が空です。入力してください")
        if len(self.body) > 20000:
            problems.append("回答が長すぎます。20000文字以内にしてください")
        if self.channels not in CHANNELS:
            problems.append(
                f"チャネルは phone（電話）/ kiosk（窓口端末）/ both（両方）のいずれかです"
                f"（指定: {self.channels!r}）")
        if kind == "manual":
            if self.manual_type not in MANUAL_TYPES:
                problems.append(
                    f"マニュアル種別は {'/'.join(MANUAL_TYPES)} のいずれかです"
                    f"（指定: {self.manual_type!r}）")
            if not self.sections:
                problems.append("マニュアルには1つ以上の節（見出しと本文）が必要です")
            for n, (heading, _body) in enumerate(self.sections, 1):
                if not heading.strip():
                    problems.append(f"{n}番目の節の見出しが空です")
        for link in re.findall(r"\]\(([^)]*)\)", self.body):
            if not link.startswith(("https://", "http://", "/")):
                problems.append(f"リンク先 {link!r} は https:// で始まるURLにしてください")
        if problems:
            raise InvalidContent("内容に誤りがあります: " + "／".join(problems),
                                 problems=problems)

    def to_columns(self) -> dict[str, Any]:
        return {
            "title": self.title, "body": self.body, "category": self.category,
            "department": self.department, "procedures": list(self.procedures),
            "keywords": list(self.keywords), "channels": self.channels,
            "manual_type": self.manual_type,
            "sections": [{"heading": h, "body": b} for h, b in self.sections],
        }

    @classmethod
    def from_row(cls, row: Any) -> Content:
        """From a FaqRevision (or anything with the same attributes)."""
        return cls.make(
            row.title, row.body, category=row.category, department=row.department,
            procedures=list(row.procedures or []), keywords=list(row.keywords or []),
            channels=row.channels, manual_type=row.manual_type,
            sections=list(row.sections or []),
        )

    def as_text(self) -> list[str]:
        """Line-oriented rendering used for diffs."""
        lines = [f"質問/表題: {self.title}", f"カテゴリ: {self.category}",
                 f"担当課: {self.department}", f"関連手続: {'|'.join(self.procedures)}",
                 f"キーワード: {'|'.join(self.keywords)}",
                 f"チャネル: {self.channels}"]
        if self.manual_type:
            lines.append(f"マニュアル種別: {self.manual_type}")
        lines.append("回答/本文:")
        lines.extend(self.body.splitlines())
        for heading, body in self.sections:
            lines.append(f"## {heading}")
            lines.extend(body.splitlines())
        return lines

    def synonym_groups(self) -> list[list[str]]:
        return [split_list(k.replace("=", "|")) for k in self.keywords if "=" in k]

    def flat_keywords(self) -> list[str]:
        out: list[str] = []
        for k in self.keywords:
            out.extend(split_list(k.replace("=", "|")))
        return out


def render_diff(old: Content | None, new: Content, old_label: str, new_label: str) -> str:
    """Unified diff of ``new`` against ``old`` (empty ``old`` = everything added)."""
    before = old.as_text() if old is not None else []
    return "\n".join(difflib.unified_diff(before, new.as_text(), old_label, new_label,
                                          lineterm=""))
