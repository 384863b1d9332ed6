"""The loso and product protocols on miniature emoji/OpenClipart corpora, and on the real ones when fetched."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from mmgen.data import Record, read_records
from mmgen.errors import DataError, UnknownNameError
from mmgen.eval.protocols import (
    EMOJI_SOURCES,
    TRAIN,
    build_protocol,
    concept_of,
    save_protocol,
    write_protocol,
)

STYLES = EMOJI_SOURCES
N_BASE = 25  # plain base concepts in every style
FLAGS = [f"1F1E6-{0x1F1E8 + i:X}" for i in range(6)]
TWIN_A, TWIN_B = f"{0x1F600 + 20:X}", f"{0x1F600 + 21:X}"  # one Twemoji image drawn for both


def _png(path: Path, color: tuple[int, int, int]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), color).save(path)
    return str(path)


def _emoji(root: Path, style: int, code: str, color: tuple[int, int, int], **meta: Any) -> Record:
    name = STYLES[style]
    fields = {"base": True, "is_flag": False, "is_extra": False, "is_component": False, "skintone": False}
    fields.update(meta)
    text = f"emoji {code}"
    return Record(
        key=code,
        image=_png(root / name / f"{code}.png", color),
        text=text,
        group=code,
        meta={"style": name, **fields, "captions": [text, f"{text}, tag"]},
    )


@pytest.fixture(scope="module")
def corpora(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Record]]:
    """Three emoji styles (base, flags, skin tones, a component, extras) and 40 OpenClipart drawings."""
    root = tmp_path_factory.mktemp("corpora")
    out: dict[str, list[Record]] = {s: [] for s in (*STYLES, "openclipart")}
    for s, name in enumerate(STYLES):
        rs = out[name]
        for i in range(N_BASE):
            code = f"{0x1F600 + i:X}"
            color = (i, 40 * s, 9) if not (name == "twemoji" and code in (TWIN_A, TWIN_B)) else (250, 250, 250)
            rs.append(_emoji(root, s, code, color))
        for i, code in enumerate(FLAGS):
            # Black flags all render as the same blank rectangle, as in OpenMoji black.
            color = (0, 0, 0) if name == "openmoji-black" else (100 + i, 40 * s, 200)
            rs.append(_emoji(root, s, code, color, is_flag=True))
        rs.append(_emoji(root, s, "1F600-1F3FB", (1, 2, 3 + s), base=False, skintone=1, skintone_base="1F600"))
        # A mixed-tone variant whose code points differ from its base concept's.
        mixed = "1FAF1-1F3FB-200D-1FAF2-1F3FC"
        rs.append(_emoji(root, s, mixed, (4, 5, 6 + s), base=False, skintone="1,2", skintone_base="1F601"))
        rs.append(_emoji(root, s, "1F3FB", (7, 8, 9 + s), base=False, is_component=True, skintone=1))
        if name != "twemoji":
            rs.append(_emoji(root, s, "E000", (10, 11, 12 + s), base=False, is_extra=True))
            rs.append(_emoji(root, s, "1FAE9", (13, 14, 15 + s)))  # an OpenMoji-only concept
        else:
            rs.append(_emoji(root, s, "1F6DC", (16, 17, 18)))  # a Twemoji-only concept
        rs.append(Record(key="1F4A9", text="broken", group="1F4A9", meta={"style": name}, error="image not found"))
    art = out["openclipart"]
    for i in range(40):
        key = f"cat{i // 10}/drawing_{i:02d}"
        color = (200, 0, 0) if i in (3, 33) else (i, 100, 50)  # two copies of one picture under two keys
        art.append(Record(key=key, image=_png(root / "png" / f"{key}.png", color), text=f"drawing {i}", group=key))
    art.append(Record(key="cat9/broken", group="cat9/broken", error="unreadable"))
    return out


def _groups(records: Iterable[Record]) -> set[str]:
    return {str(r.group) for r in records}


def test_loso(corpora: dict[str, list[Record]], tmp_path: Path) -> None:
    p = build_protocol("loso", corpora, seed=0)
    train, twemoji, flags = p.manifests[TRAIN], p.manifests["twemoji.jsonl"], p.manifests["twemoji-flags.jsonl"]
    assert {r.meta["style"] for r in train} == {"openmoji-color", "openmoji-black", "openclipart"}
    assert len(train) == sum(
        r.error is None for s in ("openmoji-color", "openmoji-black", "openclipart") for r in corpora[s]
    )
    assert all(not r.key.startswith("twemoji:") for r in train)

    expected = {f"{0x1F600 + i:X}" for i in range(N_BASE)} - {TWIN_A, TWIN_B} | {"1F6DC"}
    assert _groups(twemoji) == expected  # base only, flags out, the twin images dropped
    assert _groups(flags) == set(FLAGS)
    assert all(r.meta["style"] == "twemoji" and r.meta["base"] for r in twemoji + flags)
    assert p.summary["duplicate_images_dropped"] == {"twemoji": 2}
    assert p.summary["records_with_errors"]["openclipart"] == 1
    assert p.summary["manifests"]["twemoji.jsonl"] == {
        "records": len(twemoji),
        "images": len(twemoji),
        "texts": len(twemoji),
        "groups": len(twemoji),
    }

    paths = save_protocol(p, tmp_path)
    for name, records in p.manifests.items():
        read = list(read_records(paths[name]))
        assert [r.error for r in read if r.error] == []
        assert [r.key for r in read] == [r.key for r in records]
    assert json.loads(paths["protocol.json"].read_text())["name"] == "loso"


def test_product_splits_concepts_in_every_style(corpora: dict[str, list[Record]]) -> None:
    p = build_protocol("product", corpora, seed=1)  # seed 1 holds out 1F600 and 1F601, which have variants
    m = p.manifests
    train, queries, pool = m[TRAIN], m["heldout-concepts.jsonl"], m["heldout-vs-pool.jsonl"]
    flags, art = m["heldout-flags.jsonl"], m["openclipart-heldout.jsonl"]

    base_concepts = {r.group for s in STYLES for r in corpora[s] if r.error is None and r.meta.get("base")}
    holdout = p.summary["holdout"]
    assert holdout["emoji_base_concepts"] == len(base_concepts) == N_BASE + len(FLAGS) + 2
    assert holdout["emoji_heldout_concepts"] == round(0.2 * len(base_concepts))
    assert holdout["openclipart_heldout"] == round(0.1 * 40)

    held = _groups(queries) | _groups(flags)
    emoji_train = [r for r in train if r.meta["style"] != "openclipart"]
    assert not {concept_of(r) for r in emoji_train} & held  # skin-tone variants go with their concept
    assert not _groups(emoji_train) & held
    assert {"1F600", "1F601"} <= held
    assert not [r.key for r in emoji_train if r.key.split(":")[1] in ("1F600-1F3FB", "1FAF1-1F3FB-200D-1FAF2-1F3FC")]
    assert len([r for r in emoji_train if r.meta.get("is_component")]) == 3  # components stay in training
    art_train = {r.group for r in train if r.meta["style"] == "openclipart"}
    assert art and not art_train & _groups(art)
    assert len(art_train) + holdout["openclipart_heldout"] == 40

    # Every held-out concept is held out in each style that has it.
    for r in queries:
        assert r.meta["base"] and not r.meta["is_flag"]
    assert {r.meta["style"] for r in queries} == set(STYLES)
    assert all(r.meta["is_flag"] for r in flags)
    assert not any(r.meta["style"] == "openmoji-black" for r in flags)  # identical blank rectangles: dropped
    assert p.summary["duplicate_images_dropped"]["openmoji-black"] == len(FLAGS)
    assert p.summary["duplicate_images_dropped"]["openclipart"] == 2

    asked = [r for r in pool if r.meta.get("role") != "candidate"]
    candidates = [r for r in pool if r.meta.get("role") == "candidate"]
    assert [r.key for r in asked] == [r.key for r in queries]
    assert not _groups(candidates) & held
    non_flag_base = {
        f"{s}:{r.key}"
        for s in STYLES
        for r in corpora[s]
        if r.error is None and r.meta.get("base") and not r.meta.get("is_flag") and r.group not in held
    }
    dropped = {f"twemoji:{TWIN_A}", f"twemoji:{TWIN_B}"}
    assert {r.key for r in candidates} == non_flag_base - dropped
    assert p.summary["manifests"]["heldout-vs-pool.jsonl"]["candidates"] == len(candidates)

    for name, rs in m.items():
        assert len({r.key for r in rs}) == len(rs), name  # ids unique within each manifest


def test_same_seed_same_bytes_other_seed_other_split(corpora: dict[str, list[Record]], tmp_path: Path) -> None:
    for name in ("loso", "product"):
        a = save_protocol(build_protocol(name, corpora, seed=7), tmp_path / f"{name}-a")
        b = save_protocol(build_protocol(name, corpora, seed=7), tmp_path / f"{name}-b")
        assert list(a) == list(b)
        for f in a:
            assert a[f].read_bytes() == b[f].read_bytes(), f
    one = build_protocol("product", corpora, seed=0).manifests["heldout-concepts.jsonl"]
    two = build_protocol("product", corpora, seed=1).manifests["heldout-concepts.jsonl"]
    assert _groups(one) != _groups(two)


def _with_icons(corpora: dict[str, list[Record]], root: Path) -> dict[str, list[Record]]:
    """The miniature corpora plus one Iconify emoji style and one named icon set."""
    out = dict(corpora)
    style = []
    for i in range(N_BASE):
        code = f"{0x1F600 + i:X}"
        text = f"emoji {code}"
        meta = {"style": "fluent-emoji", "base": True, "is_flag": False, "captions": [text]}
        image = _png(root / "fl" / f"{i}.png", (i, 9, 90))
        style.append(Record(key=f"n{i}", image=image, text=text, group=code, meta=meta))
    out["fluent-emoji"] = style
    icons = []
    for i in range(N_BASE):  # an icon naming each emoji concept ("emoji 1F600 outline")
        text = f"emoji {0x1F600 + i:X} outline"
        icons.append(Record(key=f"named{i}", image=_png(root / "ic" / f"n{i}.png", (i, 90, 9)), text=text,
                            group=f"icon:{text.replace(' ', '-').lower()}", meta={"style": "mdi", "captions": [text]}))
    squashed = f"emoji{0x1F600:X}squashed".lower()  # fxemoji-style: a held-out name inside one long word
    icons.append(Record(key="sq", image=_png(root / "ic" / "sq.png", (1, 2, 3)), text=squashed,
                        group=f"icon:{squashed}", meta={"style": "mdi", "captions": [squashed]}))
    for i in range(60):  # icon concepts of their own, two variants each
        for v in range(2):
            text = f"gadget {i}"
            icons.append(Record(key=f"g{i}-{v}", image=_png(root / "ic" / f"g{i}-{v}.png", (i, v, 200)), text=text,
                                group=f"icon:gadget-{i}", meta={"style": "mdi", "captions": [text]}))
    out["mdi"] = icons
    return out


def test_product_with_iconify_sources(corpora: dict[str, list[Record]], tmp_path: Path) -> None:
    p = build_protocol("product", _with_icons(corpora, tmp_path), seed=1)
    m = p.manifests
    train, queries = m[TRAIN], m["heldout-concepts.jsonl"]
    held = _groups(queries) | _groups(m["heldout-flags.jsonl"])
    assert p.summary["sources"][-2:] == ["fluent-emoji", "mdi"]
    # The new style holds out the same concepts; no training icon names a held-out concept.
    fluent_train = {r.group for r in train if r.meta["style"] == "fluent-emoji"}
    assert fluent_train and not fluent_train & held
    assert ("mdi:sq" in {r.key for r in train}) == ("1F600" not in held)
    named_train = [r for r in train if r.key.startswith("mdi:named")]
    assert {r.text.split()[1] for r in named_train} == {r.group for r in train if r.meta["style"] == "fluent-emoji"}
    # A seeded 5% of the icon concepts, every variant, is held out and never trained on.
    icon_test = m["icons-heldout.jsonl"]
    assert len(_groups(icon_test)) == round(0.05 * p.summary["holdout"]["icon_concepts"]) == 4
    assert all(len([r for r in icon_test if r.group == g]) == 2 for g in _groups(icon_test))
    assert not _groups(icon_test) & _groups(train)
    # The development split is cut from the training concepts only, and left out of dev/train.
    dev_train, dev_eval = m["dev/train.jsonl"], m["dev/heldout-vs-pool.jsonl"]
    dev = _groups([r for r in dev_eval if r.meta.get("role") != "candidate"])
    assert dev and not dev & held and dev <= _groups(train)
    assert not dev & {concept_of(r) for r in dev_train if not str(r.group).startswith("icon:")}
    assert not any(r.text and r.text.split()[1] in dev for r in dev_train if r.key.startswith("mdi:named"))
    assert not _groups(r for r in dev_eval if r.meta.get("role") == "candidate") & (dev | held)


def test_bad_names_and_sources(corpora: dict[str, list[Record]], tmp_path: Path) -> None:
    with pytest.raises(UnknownNameError, match="loso"):
        build_protocol("nope", corpora)
    with pytest.raises(UnknownNameError):
        write_protocol("nope", tmp_path)  # type: ignore[arg-type]
    with pytest.raises(DataError, match="twemoji"):
        build_protocol("loso", {k: v for k, v in corpora.items() if k != "twemoji"})


# ---- the real corpora, when fetched ------------------------------------------------------------


def _real_data_dir() -> Path | None:
    from mmgen.data import data_dir_default
    from mmgen.data.emoji import EMOJI_STYLES, check_fetched
    from mmgen.data.openclipart import check_fetched as check_openclipart
    from mmgen.data.openclipart import openclipart_root

    data_dir = data_dir_default()
    try:
        for style in EMOJI_STYLES:
            check_fetched(data_dir, style)
        check_openclipart(openclipart_root(data_dir))
    except DataError:
        return None
    return data_dir


REAL = _real_data_dir()


@pytest.mark.skipif(REAL is None, reason="emoji and OpenClipart corpora not fetched (mmgen data fetch all)")
def test_real_corpora(tmp_path: Path) -> None:
    loso = write_protocol("loso", tmp_path / "loso", REAL)
    summary = json.loads(loso["protocol.json"].read_text())
    counts = summary["manifests"]
    # DATA.md: 1,636 Twemoji base emoji without flags, 270 flags; a few share one image and are dropped.
    assert 1550 <= counts["twemoji.jsonl"]["records"] <= 1636
    assert 240 <= counts["twemoji-flags.jsonl"]["records"] <= 270
    assert summary["data"]["openmoji"] == "17.0.0" and summary["data"]["emoji-datasource-twitter"] == "16.0.0"
    assert not any(r.meta.get("style") == "twemoji" for r in read_records(loso[TRAIN]))

    product = write_protocol("product", tmp_path / "product", REAL)
    summary = json.loads(product["protocol.json"].read_text())
    train = list(read_records(product[TRAIN]))
    eval_groups = {
        r.group for name in ("heldout-concepts.jsonl", "heldout-flags.jsonl") for r in read_records(product[name])
    }
    emoji_train = [r for r in train if r.meta["style"] != "openclipart"]
    assert not {concept_of(r) for r in emoji_train} & eval_groups
    art = {r.group for r in read_records(product["openclipart-heldout.jsonl"])}
    assert not art & {r.group for r in train if r.meta["style"] == "openclipart"}
    assert summary["holdout"]["emoji_heldout_concepts"] == round(0.2 * summary["holdout"]["emoji_base_concepts"])
    assert summary["manifests"]["heldout-concepts.jsonl"]["groups"] > 300
