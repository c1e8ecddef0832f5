"""Japanese text normalisation for search: typed queries and raw speech transcripts.

Transcripts arrive without punctuation, with spaces between words and with fillers
(えー, あの, えっと...). Both kinds of input are folded to the same form: NFKC (full-width
ASCII and half-width katakana folded), lower case, fillers and polite framing removed,
spaces and punctuation dropped. Lexical matching then uses character bigrams, which
need no dictionary and survive the recogniser's word splits.
"""

from __future__ import annotations

import re
import unicodedata

# Fillers and framing that carry no content. Matched as whole space-separated tokens
# and as prefixes of a token (transcripts often glue "あの" onto the next word).
FILLERS = (
    "えーっと", "えーと", "えっと", "ええと", "えーー", "えー", "ええ", "え",
    "あのー", "あのう", "あの", "あー", "あっ", "あ", "うーん", "うーんと", "うん", "んー",
    "まあ", "まー", "なんか", "なんですけど", "ちょっと", "その", "そのー", "もしもし",
    "はい", "すみません", "すいません", "すみませんが", "ねえ", "ねー", "ほら",
    "あのですね", "えーとですね", "ですね", "ですねえ", "でね",
)
_FILLER_SET = frozenset(FILLERS)
_FILLER_PREFIX = re.compile(
    r"^(?:" + "|".join(sorted((re.escape(f) for f in FILLERS if len(f) >= 2 and f != "その"),
                              key=len, reverse=True)) + r")+(?=.{2,})")
_PUNCT = re.compile(r"[\s、。，．,.!?！？「」『』（）()【】\[\]・:：;；\"'“”‘’…〜~]+")
_SPACE = re.compile(r"\s+")
_PARTICLES = "のをがはにでとへもや"


def fold(text: str) -> str:
    """NFKC + lower case; the long-vowel mark and wave dash survive for words like ー."""
    return unicodedata.normalize("NFKC", text).lower()


def segments(text: str) -> list[str]:
    """Content segments of a query: fillers dropped, split at spaces and punctuation."""
    folded = fold(text)
    out: list[str] = []
    for token in _SPACE.split(folded):
        token = token.strip("、。，．,.!?！？")
        if not token or token in _FILLER_SET:
            continue
        token = _FILLER_PREFIX.sub("", token)
        if token and token not in _FILLER_SET:
            out.append(token)
    return out


def normalize(text: str) -> str:
    """The compact form used for matching: segments joined, punctuation removed."""
    return _PUNCT.sub("", "".join(segments(text)))


def readable(text: str) -> str:
    """The query as a sentence for the encoder: fillers dropped, words re-joined."""
    return "".join(segments(text))


def _kind(ch: str) -> str:
    if "\u3040" <= ch <= "\u309f":
        return "h"
    if "\u30a0" <= ch <= "\u30ff":
        return "k"
    if "\u4e00" <= ch <= "\u9fff" or ch in "々〆ヶ":
        return "K"
    if ch.isdigit():
        return "d"
    if ch.isascii() and ch.isalpha():
        return "a"
    return "o"


def bigrams(text: str) -> list[str]:
    """Character bigrams of the normalised text, plus single kanji (they carry meaning
    on their own: 印, 籍, 税)."""
    norm = normalize(text)
    grams = [norm[i:i + 2] for i in range(len(norm) - 1)]
    grams.extend(ch for ch in norm if _kind(ch) == "K")
    if len(norm) == 1:
        grams.append(norm)
    return grams


def matched_terms(query_norm: str, target_norm: str, min_len: int = 2) -> list[str]:
    """Maximal substrings (>= ``min_len`` characters) of the query found in the target,
    longest first: the words to highlight in a suggestion."""
    found: list[str] = []
    i = 0
    n = len(query_norm)
    while i < n:
        best = 0
        for j in range(n, i + min_len - 1, -1):
            if query_norm[i:j] in target_norm:
                best = j - i
                break
        if best >= min_len:
            term = query_norm[i:i + best].strip(_PARTICLES)
            if len(term) >= min_len and (not all(_kind(c) == "h" for c in term)
                                         or len(term) >= 3):
                found.append(term)
            i += best
        else:
            i += 1
    unique = sorted(set(found), key=lambda t: (-len(t), found.index(t)))
    return [t for t in unique if not any(t != o and t in o for o in unique)]
