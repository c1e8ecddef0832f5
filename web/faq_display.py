"""How the FAQ pages show items, without routes: the answer text as safe HTML, a stored
diff line by line, and the labels of statuses, workflow actions, channels, manual types
and kinds (docs/faq.md).

Rich text is the library's plain-text model: the answer is plain text, a blank line
starts a paragraph, lines starting with ``- `` or ``・`` form a list, and links are
written ``[label](https://...)``. ``render_body`` escapes everything and turns only
http/https links into anchors, so no HTML typed by an editor ever reaches a page.
"""

from __future__ import annotations

import re

from flask_babel import gettext as _
from markupsafe import Markup, escape

_LINK = re.compile(r"\[([^\]\n]+)\]\((https?://[^)\s]+)\)")
_BULLET = re.compile(r"^\s*(?:- |・)")


def _inline(line: str) -> str:
    text = str(escape(line))
    return _LINK.sub(r'<a href="\2" rel="noopener noreferrer">\1</a>', text)


def render_body(text: str) -> Markup:
    """Plain text with ``[label](https://...)`` links as safe HTML (p, br, ul, li, a)."""
    out: list[str] = []
    for block in re.split(r"\n\s*\n", text.replace("\r\n", "\n").strip()):
        lines = [ln for ln in block.split("\n") if ln.strip()]
        if not lines:
            continue
        if all(_BULLET.match(ln) for ln in lines):
            items = "".join(f"<li>{_inline(_BULLET.sub('', ln, count=1))}</li>"
                            for ln in lines)
            out.append(f"<ul>{items}</ul>")
        else:
            out.append("<p>" + "<br>".join(_inline(ln) for ln in lines) + "</p>")
    return Markup("".join(out))  # nosec B704 # every piece of text above was escaped


def diff_lines(diff: str) -> list[tuple[str, str]]:
    """The stored unified diff as (kind, line): kind is add, del, head or same."""
    out: list[tuple[str, str]] = []
    for line in diff.splitlines():
        if line.startswith(("+++", "---", "@@")):
            out.append(("head", line))
        elif line.startswith("+"):
            out.append(("add", line))
        elif line.startswith("-"):
            out.append(("del", line))
        else:
            out.append(("same", line))
    return out


def status_labels() -> dict[str, str]:
    return {"draft": _("Draft"), "submitted": _("Awaiting approval"),
            "returned": _("Returned"), "approved": _("Approved"),
            "published": _("Published"), "superseded": _("Superseded"),
            "withdrawn": _("Withdrawn"), "discarded": _("Discarded")}


def action_labels() -> dict[str, str]:
    return {"created": _("Written"), "submitted": _("Submitted"), "approved": _("Approved"),
            "returned": _("Returned"), "published": _("Published"),
            "withdrawn": _("Withdrawn"), "discarded": _("Discarded"),
            "acknowledged": _("Acknowledged")}


def channel_labels() -> dict[str, str]:
    return {"phone": _("Phone"), "kiosk": _("Remote window"), "both": _("Both")}


def manual_type_labels() -> dict[str, str]:
    return {"operation": _("Operation manual"),
            "troubleshooting": _("Troubleshooting manual"),
            "operator": _("Operator handling manual")}


def kind_labels() -> dict[str, str]:
    return {"faq": _("FAQ"), "manual": _("Manual")}
