"""Iconify sets: parsing, rendering (real libvips), the emoji name join, named icon concepts, sources."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmgen.data import iconify
from mmgen.data.sources import open_sources
from mmgen.errors import DataError

SQUARE = '<path fill="#e11" d="M2 2h8v20H2z"/>'
BROKEN = '<path fill="#e11" d="M2 2h8v20H2z"'  # unterminated tag: librsvg refuses it


def write_set(
    data: Path,
    prefix: str,
    icons: dict[str, dict],
    aliases: dict[str, dict] | None = None,
    categories: dict[str, list[str]] | None = None,
    category: str = "UI 24px",
    size: int = 24,
) -> Path:
    """Install a tiny Iconify package the way npm lays it out."""
    root = iconify.package_dir(data, prefix)
    root.mkdir(parents=True, exist_ok=True)
    body = {"prefix": prefix, "icons": icons, "aliases": aliases or {}, "width": size, "height": size}
    (root / "icons.json").write_text(json.dumps(body), encoding="utf-8")
    info = {"name": f"Set {prefix}", "author": {"name": "Someone"}, "license": {"spdx": "MIT"}, "category": category}
    (root / "info.json").write_text(json.dumps(info), encoding="utf-8")
    (root / "package.json").write_text(json.dumps({"name": f"@iconify-json/{prefix}", "version": "1.0.0"}))
    if categories:
        (root / "metadata.json").write_text(json.dumps({"categories": categories}), encoding="utf-8")
    return root


def test_svg_resolves_aliases_and_flips(tmp_path: Path) -> None:
    aliases = {"right": {"parent": "left", "hFlip": True}, "other": {"parent": "left"}}
    write_set(tmp_path, "t", {"left": {"body": SQUARE}}, aliases)
    s = iconify.load_set(tmp_path, "t")
    assert s.names() == ["left", "right"]  # a plain alias is another name, not another drawing
    assert s.alias_names("left") == ["other"]
    iconify.render_set(tmp_path, "t", side=24, progress=False)
    left = np.asarray(Image.open(iconify.icon_png(tmp_path, "t", "left")).convert("RGBA"))
    right = np.asarray(Image.open(iconify.icon_png(tmp_path, "t", "right")).convert("RGBA"))
    assert left.shape == (24, 24, 4)
    assert left[12, 4, 3] > 200 and left[12, 20, 3] == 0  # the bar is on the left
    np.testing.assert_array_equal(right, left[:, ::-1])  # and mirrored on the right


def test_render_reports_a_broken_icon_and_renders_the_rest(tmp_path: Path) -> None:
    write_set(tmp_path, "t", {"good": {"body": SQUARE}, "bad": {"body": BROKEN}, "nobody": {}})
    done = iconify.render_set(tmp_path, "t", side=32, progress=False)
    assert done["failed"] == 2 and done["rendered"] == 1
    assert iconify.icon_png(tmp_path, "t", "good").is_file()
    records = {r.key: r for r in iconify.icon_set_records(tmp_path, "t")}
    assert records["good"].error is None and records["good"].image
    assert "failed to render" in (records["bad"].error or "")
    again = iconify.render_set(tmp_path, "t", side=32, progress=False)  # cached: only the failures are retried
    assert again["up_to_date"] == 1


def test_malformed_set_is_a_clear_error(tmp_path: Path) -> None:
    root = write_set(tmp_path, "t", {"a": {"body": SQUARE}})
    (root / "icons.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(DataError, match="malformed JSON"):
        iconify.load_set(tmp_path, "t")
    with pytest.raises(DataError, match="not fetched"):
        iconify.load_set(tmp_path, "missing")


def test_variants_fold_into_one_concept_across_sets(tmp_path: Path) -> None:
    write_set(
        tmp_path, "mdi", {"robot": {"body": SQUARE}, "robot-outline": {"body": SQUARE}, "robot-off": {"body": SQUARE}},
        aliases={"android-bot": {"parent": "robot"}}, categories={"Science / Technology": ["robot"]},
    )  # fmt: skip
    write_set(tmp_path, "maki", {"robot-11": {"body": SQUARE}})
    for prefix in ("mdi", "maki"):
        iconify.render_set(tmp_path, prefix, side=16, progress=False)
    mdi = {r.key: r for r in iconify.icon_set_records(tmp_path, "mdi")}
    maki = {r.key: r for r in iconify.icon_set_records(tmp_path, "maki")}
    assert mdi["robot"].group == mdi["robot-outline"].group == maki["robot-11"].group == "icon:robot"
    assert mdi["robot-outline"].meta["variant"] == "outline"
    assert mdi["robot-off"].group == "icon:robot-off"  # "off" means something: not a variant
    assert mdi["robot"].meta["captions"] == ["robot", "android bot", "robot, science / technology"]
    assert mdi["robot-outline"].meta["categories"] == ["Science / Technology"]  # found through its concept


def test_emoji_style_joins_names_to_code_points(emoji_data: Path) -> None:
    icons = {
        "bus": {"body": SQUARE},
        "thumbs-up": {"body": SQUARE},
        "thumbs-up-light": {"body": SQUARE},  # Fluent's skin-tone suffix
        "heavy-black-heart": {"body": SQUARE},  # a Unicode name (emoji-datasource)
        "bus-2": {"body": SQUARE},  # a numbered variant
        "unicorn-sparkles": {"body": SQUARE},  # joins to nothing: kept as an icon concept
        "flag-for-france": {"body": SQUARE},  # emojione's flags
        "france": {"body": SQUARE},  # streamline's flags
    }
    write_set(emoji_data, "fluent-emoji", icons, category="Emoji", size=32)
    iconify.render_set(emoji_data, "fluent-emoji", side=32, progress=False)
    records = {r.key: r for r in iconify.emoji_set_records(emoji_data, "fluent-emoji")}
    assert records["bus"].group == "1F68C" and records["bus"].text == "bus"
    assert records["bus"].meta["tags"] == ["bus", "vehicle"] and records["bus"].meta["base"] is True
    assert records["thumbs-up-light"].group == "1F44D-1F3FB" and records["thumbs-up-light"].meta["base"] is False
    assert records["heavy-black-heart"].group == "2764"
    assert records["bus-2"].group == "1F68C" and records["bus-2"].meta["join"] == "numbered"
    odd = records["unicorn-sparkles"]
    assert odd.error is None and odd.group == "icon:unicorn-sparkles" and odd.text == "unicorn sparkles"
    assert records["flag-for-france"].group == records["france"].group == "1F1EB-1F1F7"
    assert records["france"].meta["join"] == "flag" and records["france"].text == "flag: France"
    coverage = iconify.join_coverage(emoji_data, "fluent-emoji")
    assert coverage["icons"] == 8 and coverage["joined"] == 7 and coverage["by"]["none"] == 1


def test_sources_name_the_sets_and_the_generic_prefix(emoji_data: Path) -> None:
    write_set(emoji_data, "tabler", {"bus": {"body": SQUARE}})
    with pytest.raises(DataError, match="not rendered"):
        open_sources("tabler", emoji_data)
    iconify.render_set(emoji_data, "tabler", side=16, progress=False)
    (src,) = open_sources("tabler", emoji_data)
    assert src.corpus == "tabler" and src.licence == "MIT (Set tabler, Someone)"
    assert [r.group for r in src.records()] == ["icon:bus"]
    write_set(emoji_data, "my-set", {"cat-face": {"body": SQUARE}})
    iconify.render_set(emoji_data, "my-set", side=16, progress=False)
    (generic,) = open_sources("iconify:my-set", emoji_data)
    assert [r.text for r in generic.records()] == ["cat face"]
    with pytest.raises(DataError, match="not fetched"):
        open_sources("iconify:nothing-here", emoji_data)


def test_fetch_reports_a_malformed_set_and_prepares_the_others(tmp_path: Path) -> None:
    from mmgen.data.fetch import fetch_iconify

    write_set(tmp_path, "good", {"a": {"body": SQUARE}})
    bad = write_set(tmp_path, "bad", {"a": {"body": SQUARE}})
    (bad / "icons.json").write_text('{"icons": [', encoding="utf-8")
    done = fetch_iconify(tmp_path, {"bad": "1.0.0", "good": "1.0.0"}, progress=False)  # installed: npm not run
    assert done["npm_installed"] is False
    assert done["sets"]["good"]["rendered"] == 1
    assert "malformed JSON" in done["sets"]["bad"]["error"] and done["errors"][0].startswith("bad:")
    with pytest.raises(DataError, match="lower-case"):
        fetch_iconify(tmp_path, {"../etc": None}, progress=False)
