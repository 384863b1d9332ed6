"""Emoji loaders on a miniature npm tree, and record counts on the real corpora when fetched."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mmgen.data.emoji import check_fetched, normalise_codepoints, openmoji_records, twemoji_records
from mmgen.errors import DataError

REAL_DATA = Path(os.environ.get("MMGEN_DATA") or "data").resolve()
real_emoji = pytest.mark.skipif(
    not (REAL_DATA / "emoji" / "openmoji-black").is_dir(),
    reason=f"real emoji corpora not fetched into {REAL_DATA} (mmgen data fetch emoji; set MMGEN_DATA)",
)


def test_normalise_codepoints() -> None:
    assert normalise_codepoints("0023-fe0f-20e3") == "0023-20E3"
    assert normalise_codepoints("2764-FE0F") == "2764"
    assert normalise_codepoints("1F44D") == "1F44D"


def test_openmoji_records(emoji_data: Path) -> None:
    recs = {r.key: r for r in openmoji_records(emoji_data, "openmoji-black")}
    assert list(recs) == ["1F68C", "1F44D", "1F44D-1F3FB", "0023-20E3", "1F1EB-1F1F7", "E045"]
    bus = recs["1F68C"]
    assert bus.text == "bus" and bus.group == "1F68C" and bus.error is None
    assert bus.image == str(emoji_data / "emoji" / "openmoji-black" / "1F68C.png")
    assert bus.meta["tags"] == ["bus", "vehicle"] and bus.meta["captions"] == ["bus", "bus, vehicle"]
    assert bus.meta["style"] == "openmoji-black" and bus.meta["base"] is True and bus.meta["skintone"] is False
    tone = recs["1F44D-1F3FB"].meta
    assert tone["skintone"] == 1 and tone["base"] is False and tone["skintone_base"] == "1F44D"
    assert recs["0023-20E3"].meta["hexcode"] == "0023-FE0F-20E3"
    assert recs["0023-20E3"].image is not None and recs["0023-20E3"].image.endswith("0023-FE0F-20E3.png")
    assert recs["1F1EB-1F1F7"].meta["is_flag"] is True and recs["1F1EB-1F1F7"].meta["base"] is True
    extra = recs["E045"].meta
    assert extra["is_extra"] is True and extra["base"] is False and extra["captions"] == ["github"]


def test_missing_png_is_an_error_record(emoji_data: Path) -> None:
    (emoji_data / "emoji" / "openmoji-color" / "1F68C.png").unlink()
    bus = next(r for r in openmoji_records(emoji_data, "openmoji-color") if r.key == "1F68C")
    assert bus.image is None and bus.error is not None and bus.error.startswith("image not found:")


def test_twemoji_records_join_openmoji(emoji_data: Path) -> None:
    recs = list(twemoji_records(emoji_data))
    assert [r.key for r in recs] == ["1F44D", "1F44D-1F3FB", "1F44D-1F3FC", "0023-20E3", "1F68C", "2764"]
    by_key = {r.key: r for r in recs}
    assert by_key["1F44D"].text == "thumbs up" and by_key["1F44D"].meta["base"] is True
    assert by_key["1F44D"].meta["name"] == "THUMBS UP SIGN" and by_key["1F44D"].meta["short_name"] == "+1"
    light = by_key["1F44D-1F3FB"]
    assert light.text == "thumbs up: light skin tone" and light.meta["base"] is False and light.meta["skintone"] == 1
    # no OpenMoji counterpart: the emoji-datasource name, lower-cased
    medium = by_key["1F44D-1F3FC"]
    assert medium.text == "thumbs up sign" and medium.meta["openmoji_match"] is False
    assert medium.meta["skintone"] == 2 and medium.meta["base"] is False
    assert by_key["0023-20E3"].group == "0023-20E3"  # same group as OpenMoji despite FE0F
    assert by_key["2764"].error is not None and "image not found" in by_key["2764"].error
    assert by_key["1F68C"].image is not None and by_key["1F68C"].image.endswith("img/twitter/64/1f68c.png")


def test_not_fetched(emoji_npm: Path, tmp_path: Path) -> None:
    check_fetched(emoji_npm, "twemoji")
    with pytest.raises(DataError, match="mmgen data fetch emoji"):
        check_fetched(emoji_npm, "openmoji-color")  # SVGs installed but not rasterised
    with pytest.raises(DataError, match="mmgen data fetch emoji"):
        check_fetched(tmp_path / "empty", "twemoji")


@real_emoji
def test_real_emoji_counts() -> None:
    for style in ("openmoji-color", "openmoji-black"):
        recs = list(openmoji_records(REAL_DATA, style))
        assert len(recs) == 4495 and not [r for r in recs if r.error]
        assert sum(r.meta["is_extra"] for r in recs) == 542
        assert sum(bool(r.meta["tags"]) for r in recs) == 1923
    tw = list(twemoji_records(REAL_DATA))
    assert len(tw) == 3786 and not [r for r in tw if r.error]
    assert sum(not r.meta["skin_variation"] for r in tw) == 1911
    base = [r for r in tw if r.meta["base"]]
    assert len(base) == 1906 and sum(r.meta["is_flag"] for r in base) == 270
    assert all(r.meta["openmoji_match"] for r in tw)
    bus = {r.key: r for r in tw}["1F68C"]
    assert bus.text == "bus"


def test_unicode_names_become_alternative_captions_only_when_asked(emoji_data: Path) -> None:
    from mmgen.train.data import collect_examples

    records = {(r.meta["style"], r.key): r for r in openmoji_records(emoji_data, "openmoji-color")}
    thumbs = records[("openmoji-color", "1F44D")]
    assert thumbs.meta["names"] == ["thumbs up sign", "thumbsup"]  # "+1" is not a caption
    assert records[("openmoji-color", "1F68C")].meta["names"] == []  # "bus" is the annotation already
    plain, _ = collect_examples(["openmoji-color"], emoji_data)
    named, _ = collect_examples(["openmoji-color"], emoji_data, caption_names=True)
    by_text = {e.captions[0]: e for e in plain}
    assert "thumbs up sign" not in by_text["thumbs up"].captions
    assert {e.captions[0]: e for e in named}["thumbs up"].captions[-2:] == ["thumbs up sign", "thumbsup"]
