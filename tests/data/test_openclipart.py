"""OpenClipart: caption cleaning on real metadata, the loader on a miniature tree, real counts."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from mmgen.data.openclipart import (
    build_caption,
    clean_caption,
    common_titles,
    openclipart_records,
    openclipart_root,
    parse_svg_metadata,
)
from mmgen.errors import DataError

REAL_ROOT = Path(os.environ.get("MMGEN_OPENCLIPART_DIR") or "/usr/share/openclipart")
real_openclipart = pytest.mark.skipif(not (REAL_ROOT / "png").is_dir(), reason=f"OpenClipart not in {REAL_ROOT}")

# Verbatim metadata of real drawings: (relpath, title, keywords, description, creator) -> caption.
FLAT = "Part of the Flat Icon Collection (Wed Aug 25 23:29:46 2004)"
REAL_EXAMPLES = [
    (
        (
            "computer/icons/flat-theme/action/edit_remove",
            FLAT,
            ["hash", "", "action", "computer", "icons", "theme"],
            "",
            "Danny Allen",
        ),
        "edit remove, action, icons",
    ),
    (
        ("shapes/stars/star_07pt03step", "gramastar", ["stars", "shapes", "magick", "geometry"], "", "codifiedivining"),
        "7-pointed star, geometry",
    ),
    (
        ("recreation/games/cards/white/white_c_6", "card", ["card", "white"], "", "Nicu Buculei"),
        "6 of clubs playing card, white, games",
    ),
    (
        (
            "animals/mammals/horses/cavallo_architetto_franc_05",
            "Cavallo",
            ["mammal", "horse"],
            "",
            "Architetto Francesco Rollandin",
        ),
        "cavallo, mammal, horse",
    ),
    (
        (
            "animals/mammals/horses/mechorse",
            "Tempus Fugit",
            ["mammal", "time", "industry", "robot", "horse"],
            "Mechanical horse jumping over a clock",
            "John Conner Atkeson III",
        ),
        "tempus fugit, mechanical horse jumping over a clock, mammal, time, industry, robot",
    ),
    (
        (
            "tools/weapons/bullet_hole_linda_kim_aa",
            "Bullet Hole",
            ["hole", "bullet", "bullethole", "explode", "gun", "gunshot", "destroy", "shot"],
            "This is a vectorized bullet hole.",
            "Linda Kim",
        ),
        "bullet hole, explode, gun, gunshot, destroy, shot, weapons",
    ),
    (
        (
            "computer/icons/lemon-theme/devices/dvd_mount",
            "Lemon SVG theme",
            ["icon", "", "lemon_theme_icon", "icons", "device", "hash", "computer", "theme"],
            "",
            "Jose Hevia",
        ),
        "dvd mount, icon, device",
    ),
    (
        ("people/stickmen/sm_001", "stick man", ["", "people", "stickmen"], "", "Nicu Buculei"),
        "sm, stick man, stickmen",
    ),
    (
        (
            "signs_and_symbols/map_symbols/aiga_baggage_lockers1",
            "AIGA_Symbol_Signs",
            ["symbol", "mapsym"],
            "EPS converted from  http://aiga.org",
            "Jean-Victor Balin",
        ),
        "baggage lockers, symbol signs, map symbols",
    ),
    (
        (
            "recreation/sports/baseball_glove_bw_ganson",
            "Baseball Glove (B and W)",
            ["sports", "baseball", "equipment", "glove"],
            "Baseball Glove (Black and White)",
            "Gerald G.",
        ),
        "baseball glove black and white, sports, equipment",
    ),
    # the "Clipart by" title names another drawing (a piggy bank): trust the file name instead
    (
        (
            "tools/weapons/lightsabers",
            "Clipart by Nicu Buculei - piggybank",
            ["weapon", "", "tool"],
            "",
            "Nicu Buculei",
        ),
        "lightsabers, weapon",
    ),
    (
        (
            "signs_and_symbols/BandeMarquageSecurite",
            "advertising",
            ["", "caution", "security", "warning", "signs_and_symbols", "sign"],
            "",
            "yves GUILLOU",
        ),
        "bande marquage securite, advertising, caution, security, warning, sign",
    ),
    (
        (
            "animals/mammals/big_cats/tiger_graig_ryan_smith_-_01",
            "Tiger",
            ["mammal", "cat", "tigerorangegreenvector", "tiger", "feline"],
            "",
            "Graig Ryan Smith - graig@seretogis.org",
        ),
        "tiger, mammal, cat, feline, big cats",
    ),
    (("people/grampa_39_n_gramma_celso_02", "Grampa&#39;n Gramma", ["grampa"], "", "Celso"), "grampa'n gramma, grampa"),
]
COMMON = ["gramastar", "card", "stick man", "aiga_symbol_signs", "advertising", "bullet hole", FLAT, "lemon svg theme"]


@pytest.mark.parametrize(("args", "expected"), REAL_EXAMPLES, ids=[a[0][0].rsplit("/", 1)[-1] for a in REAL_EXAMPLES])
def test_clean_caption_on_real_examples(args: tuple[str, str, list[str], str, str], expected: str) -> None:
    relpath, title, keywords, description, creator = args
    caption = clean_caption(title, keywords, description, relpath, COMMON, creator=creator)
    assert caption == expected
    assert len(caption.replace(",", " ").split()) <= 12


def test_caption_source() -> None:
    assert build_caption("Tiger", ["cat"], "", "animals/tiger_01", [])[1] == "title"
    assert build_caption("gramastar", [], "", "shapes/stars/star_05pt02step", [])[1] == "path"
    assert build_caption("Dino", [], "", "animals/dino_01", ["dino"]) == ("dino", "path")
    assert build_caption("", [], "", "unsorted/01", []) == ("unsorted", "path")


def test_common_titles() -> None:
    titles = ["Lemon SVG theme"] * 5 + ["lemon  svg THEME", "Tiger", "", "Tiger"]
    assert common_titles(titles) == frozenset({"lemon svg theme"})


def test_loader_on_a_miniature_tree(tmp_path: Path, write_clipart: Callable[..., None]) -> None:
    root = tmp_path / "openclipart"
    for i in range(6):
        write_clipart(root, f"shapes/stars/star_{i + 5:02d}pt02step", "gramastar", ["stars", "magick"])
    write_clipart(root, "animals/mammals/bull_utrescu_", "Bull", ["mammal", "bull"], "Bull", creator="utrescu")
    write_clipart(root, "food/fruit/apple_01", "Apple", ["fruit"])
    (root / "svg" / "food" / "fruit" / "apple_01.svg").write_text("<svg><metadata>broken", encoding="utf-8")
    # a second path to the same drawing, as Debian ships it (png and svg both symlinked)
    for kind in ("png", "svg"):
        (root / kind / "animals" / f"bull_link.{kind}").symlink_to(f"mammals/bull_utrescu_.{kind}")
    (root / "png" / "dangling.png").symlink_to("nowhere.png")
    recs = {r.key: r for r in openclipart_records(root)}
    assert list(recs) == ["animals/mammals/bull_utrescu_", "food/fruit/apple_01"] + [
        f"shapes/stars/star_{i:02d}pt02step" for i in range(5, 11)
    ]
    bull = recs["animals/mammals/bull_utrescu_"]
    assert bull.text == "bull, mammal" and bull.group == bull.key
    assert bull.meta["aliases"] == ["animals/bull_link"] and bull.meta["category"] == "animals"
    assert bull.meta["licence"] == "public-domain" and bull.meta["creator"] == "utrescu"
    assert bull.image == str((root / "png/animals/mammals/bull_utrescu_.png").resolve())
    apple = recs["food/fruit/apple_01"]
    assert apple.text == "apple, fruit" and "metadata_error" in apple.meta
    star = recs["shapes/stars/star_05pt02step"]
    assert star.text == "5-pointed star" and star.meta["collection"] == "gramastar"


def test_parse_svg_metadata_tolerates_junk(tmp_path: Path, write_clipart: Callable[..., None]) -> None:
    write_clipart(tmp_path, "x", "Title &amp; more", ["a", "b"], "desc", creator="Me")
    meta = parse_svg_metadata(tmp_path / "svg" / "x.svg")
    assert (meta.title, meta.keywords, meta.description, meta.creator) == ("Title & more", ["a", "b"], "desc", "Me")
    (tmp_path / "junk.svg").write_bytes(b"\x00\x01 not xml")
    assert parse_svg_metadata(tmp_path / "junk.svg").parsed is False


def test_root_and_not_fetched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MMGEN_OPENCLIPART_DIR", raising=False)
    (tmp_path / "openclipart.json").write_text('{"root": "/srv/oc"}', encoding="utf-8")
    assert openclipart_root(tmp_path) == Path("/srv/oc")
    monkeypatch.setenv("MMGEN_OPENCLIPART_DIR", str(tmp_path / "oc"))
    assert openclipart_root(tmp_path) == tmp_path / "oc"
    with pytest.raises(DataError, match="mmgen data fetch openclipart"):
        list(openclipart_records(tmp_path / "oc"))


@real_openclipart
def test_real_openclipart_counts() -> None:
    recs = list(openclipart_records(REAL_ROOT))
    # 8,121 PNG paths, 1,221 of them symlinks: 6,900 distinct PNG files
    assert len(recs) == 6900 and len({r.key for r in recs}) == 6900
    assert sum(len(r.meta["aliases"]) for r in recs) == 8121 - 6900
    assert all(r.text and len(r.text.replace(",", " ").split()) <= 12 for r in recs)
    from_title = sum(r.meta["caption_source"] == "title" for r in recs)
    assert 2600 <= from_title <= 3000
    by_key = {r.key: r for r in recs}
    assert by_key["food/fruit/apple_mateya_01"].text == "apple, fruit"
    assert by_key["computer/icons/flat-theme/action/edit_remove"].text.startswith("edit remove")
