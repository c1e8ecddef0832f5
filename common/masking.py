"""Masking of personal data in free text (transcripts, notes, FAQ candidates).

``mask_personal_data`` replaces phone numbers, dates (birth dates), 12-digit numbers
(My Number), postcodes, any other run of 4+ digits (PINs, card and account numbers),
spoken digit sequences, addresses and self-introduced names with bracketed labels.
It is deliberately greedy: a masked harmless number costs little, a leaked one a lot.
Used by the FAQ gap finder and the transcription pipeline.
"""

from __future__ import annotations

import re

_D = r"[0-9０-９]"
_SEP = r"[-‐－―ー−\s]"
_HY = r"[-‐－―ー−]"
_KD = "〇零一二三四五六七八九十"  # kanji digits
_SPOKEN = r"(?:ゼロ|ぜろ|れい|まる|いち|に|さん|よん|し|ご|ろく|なな|しち|はち|きゅう|く)"

# One digit in any of the forms speech recognition writes: arabic, kanji, spoken.
# (Some Vosk models write a recognized number in brackets: "[4]".)
_ANYD = rf"(?:{_D}|[{_KD}]|ゼロ|ぜろ|まる|マル|れい|\[{_D}{{1,2}}\])"
# What may follow a keyword before the value: particles, "number", spaces.
_LEAD = r"\s*(?:番号)?\s*(?:は|が|を|も)?\s*"

_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    # Values announced by a keyword: PIN, phone number, birth date, individual number.
    (re.compile(rf"(暗証番号|暗証|パスワード|PIN|ＰＩＮ){_LEAD}(?:{_ANYD}|{_SPOKEN}|[\s、]){{1,16}}"),
     r"\1［数字］"),
    (re.compile(rf"(電話番号|電話|携帯番号|携帯|連絡先){_LEAD}"
                rf"(?:{_ANYD}|{_SPOKEN}|{_HY}|[\s、の]){{4,30}}"),
     r"\1［電話番号］"),
    (re.compile(rf"(生年月日|誕生日){_LEAD}(?:{_ANYD}|[年月日\s、]|明治|大正|昭和|平成|令和|元)"
                r"{2,24}"),
     r"\1［日付］"),
    (re.compile(rf"(マイナンバー|個人番号){_LEAD}(?:{_ANYD}|{_SPOKEN}|[\s、]){{4,30}}"),
     r"\1［個人番号］"),
    # Name after a self-introduction or a question about it.
    (re.compile(r"(名前は|氏名は|名義は)\s*[^\s、。,.]{1,12}?(?=\s|です|と申し|、|。|$)"),
     r"\1［氏名］"),
    (re.compile(r"[^\s、。,.]{1,12}?と申します"), "［氏名］と申します"),
    # Dates: era or western year, month, day (birth dates and the like).
    (re.compile(rf"(?:明治|大正|昭和|平成|令和|西暦)?\s*(?:{_D}{{1,4}}|[{_KD}]{{1,4}}|元)\s*年\s*"
                rf"(?:{_D}{{1,2}}|[{_KD}]{{1,3}})\s*月\s*(?:{_D}{{1,2}}|[{_KD}]{{1,3}})\s*日"),
     "［日付］"),
    (re.compile(rf"{_D}{{4}}[/／.\-]{_D}{{1,2}}[/／.\-]{_D}{{1,2}}"), "［日付］"),
    # My Number: 12 digits, possibly grouped by four.
    (re.compile(rf"(?<!{_D}){_D}{{4}}{_SEP}?{_D}{{4}}{_SEP}?{_D}{{4}}(?!{_D})"), "［個人番号］"),
    # Phone numbers: 0X-XXXX-XXXX and friends, or 10-11 digits.
    (re.compile(rf"(?<!{_D})[0０]{_D}{{1,4}}{_SEP}?{_D}{{1,4}}{_SEP}?{_D}{{3,4}}(?!{_D})"),
     "［電話番号］"),
    # Postcodes.
    (re.compile(rf"〒?\s*(?<!{_D}){_D}{{3}}[-‐－ー]{_D}{{4}}(?!{_D})"), "［郵便番号］"),
    # Addresses: [prefecture][city/ward/town] ... number + 丁目/番地/番/号 or 1-2-3.
    (re.compile(r"(?:[一-龥ぁ-んァ-ヶ]{1,5}[都道府県])?(?:[一-龥ァ-ヶ]{1,8}[市区町村郡])*"
                rf"[一-龥ぁ-んァ-ヶ]{{0,10}}?(?:{_D}+|[{_KD}]+)\s*(?:丁目|番地|番|号|{_HY}\s*{_D})"
                rf"(?:\s*(?:{_D}+|[{_KD}]+)\s*(?:丁目|番地|番|号|{_HY}|の)?)*"),
     "［住所］"),
    (re.compile(r"(住所は|住所が|住所を|住まいは|住んでいるのは|在住で)\s*[^。、,.\n［]{2,40}?"
                r"(?=です|でございます|に住|。|、|$)"),
     r"\1［住所］"),
    # Any other run of 4+ digits (PINs, card, account and insurance numbers).
    (re.compile(rf"{_D}(?:{_SEP}?{_D}){{3,}}"), "［数字］"),
    # Digits spoken one by one ("ぜろきゅうぜろ...", "〇九〇一二三四") in transcripts,
    # also as recognized words separated by spaces ("ゼロ 九 ゼロ 一").
    (re.compile(rf"{_ANYD}(?:[\s、]*{_ANYD}){{3,}}"), "［数字］"),
    (re.compile(rf"[{_KD}]{{4,}}"), "［数字］"),
    (re.compile(rf"(?:{_SPOKEN}\s*){{4,}}(?=\s|$)"), "［数字］"),
)


_CJK = r"[\u3040-\u30ff\u3400-\u9fff\uff00-\uffef々〆〇ー]"
_CJK_SPACE = re.compile(rf"(?<={_CJK})\s+(?={_CJK})")


def join_japanese_words(text: str) -> str:
    """Speech recognition writes Japanese as space-separated words: drop the spaces
    between Japanese characters (other scripts keep theirs)."""
    return _CJK_SPACE.sub("", text).strip()


def mask_personal_data(text: str) -> str:
    """``text`` with personal data replaced by labels such as ［電話番号］ and ［住所］."""
    out = text
    for pattern, repl in _RULES:
        out = pattern.sub(repl, out)
    return out


__all__ = ["join_japanese_words", "mask_personal_data"]
