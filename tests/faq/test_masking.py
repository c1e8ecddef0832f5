"""Personal data masking (common.masking), used by the gap finder and transcripts."""

from __future__ import annotations

import pytest

from common.masking import mask_personal_data


@pytest.mark.parametrize(("text", "secret", "label"), [
    ("電話番号は090-1234-5678です", "1234", "［電話番号］"),
    ("携帯は０９０１２３４５６７８です", "１２３４", "［電話番号］"),
    ("生年月日は昭和55年3月12日です", "55年", "［日付］"),
    ("1980/05/01生まれです", "1980", "［日付］"),
    ("マイナンバーは1234 5678 9012です", "5678", "［個人番号］"),
    ("番号は123456789012です", "123456789012", "［個人番号］"),
    ("暗証番号は4821です", "4821", "［数字］"),
    ("住所は東京都港区芝公園4丁目2番8号です", "芝公園", "［住所］"),
    ("サンプル市中央町3-12-5に住んでいます", "中央町3", "［住所］"),
    ("〒105-0011の住所です", "105", "［郵便番号］"),
    ("番号は ぜろ きゅう ぜろ いち に さん よん です", "きゅう ぜろ いち", "［数字］"),
    ("山田花子と申します", "山田", "［氏名］"),
])
def test_masks_personal_data(text: str, secret: str, label: str) -> None:
    masked = mask_personal_data(text)
    assert secret not in masked
    assert label in masked


def test_keeps_ordinary_content() -> None:
    text = "住民票の写しは1通300円で、14日以内に届け出てください"
    assert mask_personal_data(text) == text
