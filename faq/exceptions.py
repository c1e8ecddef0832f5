"""Domain errors of the FAQ base. Messages are Japanese (shown to users) and say how to
fix the problem; ``error_id`` is a stable English key for APIs and logs."""

from __future__ import annotations

from typing import Any


class FaqError(Exception):
    """Base class: ``error_id``, a Japanese ``message`` and ``details`` for the caller."""

    error_id = "faq-error"
    status_code = 400

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class PermissionDenied(FaqError):
    error_id = "faq-permission-denied"
    status_code = 403


class NoSuchItem(FaqError):
    error_id = "faq-no-such-item"
    status_code = 404

    def __init__(self, item_id: int) -> None:
        super().__init__(f"FAQ・マニュアル項目 {item_id} は存在しません。", item_id=item_id)


class StaleVersion(FaqError):
    """Optimistic lock: someone else changed the item since the caller read it."""

    error_id = "faq-stale-version"
    status_code = 409

    def __init__(self, item_id: int, expected: int | None, current: int | None) -> None:
        super().__init__(
            f"項目 {item_id} は他の人が先に更新しました（あなたが見た版: {expected}、"
            f"現在の版: {current}）。画面を読み込み直し、最新の内容に対して操作してください。",
            item_id=item_id, expected=expected, current=current,
        )


class InvalidTransition(FaqError):
    error_id = "faq-invalid-transition"
    status_code = 409


class InvalidContent(FaqError):
    error_id = "faq-invalid-content"
    status_code = 422


class ImportFailed(FaqError):
    """An import was refused as a whole; ``errors`` lists (line, column, reason)."""

    error_id = "faq-import-failed"
    status_code = 422

    def __init__(self, errors: list[tuple[int, str, str]]) -> None:
        lines = [f"{line}行目" + (f"（{col}）" if col else "") + f": {reason}"
                 for line, col, reason in errors]
        shown = "\n".join(lines[:50])
        more = f"\n…ほか {len(lines) - 50} 件" if len(lines) > 50 else ""
        super().__init__(
            "取り込みを中止しました（1件も登録していません）。次の行を直して、"
            f"ファイル全体をもう一度取り込んでください。\n{shown}{more}",
            errors=errors,
        )
        self.errors = errors
