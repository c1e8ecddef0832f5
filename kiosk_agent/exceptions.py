"""Card errors, each with a stable id, a kiosk message and an operator notice.

The kiosk message is what the citizen reads on the kiosk screen (Japanese first,
English second). The operator notice is a short line the kiosk page forwards to the
operator's console. Neither ever contains the PIN or any card data.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Message:
    """One text in Japanese and English."""

    ja: str
    en: str


class CardError(Exception):
    """Base class: ``error_id`` is stable (the kiosk page switches on it)."""

    error_id = "card-error"
    http_status = 500
    kiosk = Message(
        "カードを読み取れませんでした。係員にお知らせください。",
        "The card could not be read. Please tell the operator.",
    )
    operator = Message("カード読取りでエラーが発生しました。", "Card reading failed.")

    def __init__(self, detail: str = "", *, tries_left: int | None = None) -> None:
        # ``detail`` is for logs and the operator only: status words, PC/SC codes.
        self.detail = detail
        self.tries_left = tries_left
        super().__init__(f"{self.error_id}: {detail}" if detail else self.error_id)

    def kiosk_message(self) -> Message:
        return self.kiosk

    def operator_notice(self) -> Message:
        return self.operator

    def to_dict(self) -> dict[str, object]:
        kiosk = self.kiosk_message()
        operator = self.operator_notice()
        body: dict[str, object] = {
            "error": self.error_id,
            "message_ja": kiosk.ja,
            "message_en": kiosk.en,
            "operator_notice_ja": operator.ja,
            "operator_notice_en": operator.en,
        }
        if self.tries_left is not None:
            body["tries_left"] = self.tries_left
        if self.detail:
            body["detail"] = self.detail
        return body


class ServiceUnavailable(CardError):
    """The PC/SC service (pcscd) is not running or stopped under us."""

    error_id = "pcsc-unavailable"
    http_status = 503
    kiosk = Message(
        "カードリーダーが使えません。係員にお知らせください。",
        "The card reader is not available. Please tell the operator.",
    )
    operator = Message(
        "PC/SCサービス(pcscd)に接続できません。端末の保守が必要です。",
        "Cannot reach the PC/SC service (pcscd). The kiosk needs maintenance.",
    )


class NoReader(CardError):
    """No reader, or not the configured one."""

    error_id = "no-reader"
    http_status = 503
    kiosk = Message(
        "カードリーダーが見つかりません。係員にお知らせください。",
        "No card reader was found. Please tell the operator.",
    )
    operator = Message(
        "カードリーダーが接続されていません(抜けている可能性があります)。",
        "No card reader is connected (it may have been unplugged).",
    )


class ReaderUnplugged(NoReader):
    """The reader went away while we were using it."""

    error_id = "reader-unplugged"
    operator = Message(
        "読取り中にカードリーダーが外れました。接続を確認してください。",
        "The card reader was disconnected during the read. Check its cable.",
    )


class NoCard(CardError):
    error_id = "no-card"
    http_status = 409
    kiosk = Message(
        "カードが入っていません。マイナンバーカードをカードリーダーに置いてください。",
        "No card is inserted. Please place your My Number card on the reader.",
    )
    operator = Message("カードが挿入されていません。", "No card in the reader.")


class CardRemoved(CardError):
    error_id = "card-removed"
    http_status = 409
    kiosk = Message(
        "読取り中にカードが抜かれました。もう一度カードを置いてください。",
        "The card was removed while it was being read. Please place it again.",
    )
    operator = Message(
        "読取り中にカードが抜かれました。再読取りを案内してください。",
        "The card was removed during the read. Ask the citizen to insert it again.",
    )


class NotMyNumberCard(CardError):
    error_id = "not-my-number-card"
    http_status = 422
    kiosk = Message(
        "このカードは読み取れません。マイナンバーカードを置いてください。",
        "This card cannot be read. Please use your My Number card.",
    )
    operator = Message(
        "マイナンバーカード以外のカードが置かれています。",
        "The card in the reader is not a My Number card.",
    )


class WrongPin(CardError):
    error_id = "wrong-pin"
    http_status = 403
    operator = Message(
        "暗証番号が一致しませんでした。", "The PIN did not match."
    )

    def __init__(self, detail: str = "", *, tries_left: int) -> None:
        super().__init__(detail, tries_left=tries_left)

    def kiosk_message(self) -> Message:
        n = self.tries_left
        if n == 1:
            return Message(
                "暗証番号が違います。残り1回です。次に間違えるとカードがロックされ、"
                "市役所の窓口での手続きが必要になります。",
                "Wrong PIN. 1 try left. One more wrong PIN locks the card, and unlocking "
                "it needs a visit to the city office.",
            )
        return Message(
            f"暗証番号が違います。残り{n}回です。",
            f"Wrong PIN. {n} tries left.",
        )

    def operator_notice(self) -> Message:
        return Message(
            f"暗証番号が一致しませんでした(残り{self.tries_left}回)。",
            f"The PIN did not match ({self.tries_left} tries left).",
        )


class PinLocked(CardError):
    error_id = "pin-locked"
    http_status = 423
    kiosk = Message(
        "暗証番号が3回間違えられたため、カードがロックされています。"
        "ロックの解除は市役所の窓口で行えます。本人確認書類とカードをお持ちください。",
        "The card is locked after 3 wrong PINs. It can be unlocked at the city office; "
        "please bring the card and proof of identity.",
    )
    operator = Message(
        "券面事項入力補助用暗証番号がロックされています。市役所窓口での解除を案内してください。",
        "The card's PIN is locked. Guide the citizen to the city office to unlock it.",
    )

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail, tries_left=0)


class BadPinFormat(CardError):
    """Rejected before touching the card: no try is used up."""

    error_id = "bad-pin-format"
    http_status = 400
    kiosk = Message(
        "暗証番号は数字4桁です。もう一度入力してください。",
        "The PIN is 4 digits. Please enter it again.",
    )
    operator = Message(
        "暗証番号の形式が不正です(カードには送っていません)。",
        "Malformed PIN (not sent to the card).",
    )


class UnexpectedResponse(CardError):
    """A status word or data layout we do not know how to handle."""

    error_id = "unexpected-response"
    http_status = 502
    operator = Message(
        "カードが想定外の応答を返しました。",
        "The card returned an unexpected response.",
    )

    def operator_notice(self) -> Message:
        if not self.detail:
            return self.operator
        return Message(f"{self.operator.ja}({self.detail})", f"{self.operator.en} ({self.detail})")


class Busy(CardError):
    error_id = "busy"
    http_status = 409
    kiosk = Message(
        "ただいまカードを読み取っています。しばらくお待ちください。",
        "The card is being read. Please wait.",
    )
    operator = Message("別の読取りが実行中です。", "Another card operation is running.")
