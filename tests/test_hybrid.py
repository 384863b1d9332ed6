"""`mmgen search --keyword / --hybrid / --group / --dedup` end to end on a tiny real workspace, its store on
SQLite and on PostgreSQL: rankings, fusion arithmetic, filters inside both sides, the keyword index following
indexing and pruning, and errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mmgen.cli import app
from mmgen.hybrid import RRF_K, Retrieval, fuse
from mmgen.search import Hit

runner = CliRunner()


def search(ws: Any, *args: str) -> dict[str, Any]:
    res = runner.invoke(app, ["search", *args, "--workspace", str(ws.root), "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def fails(ws: Any, *args: str) -> str:
    res = runner.invoke(app, ["search", *args, "--workspace", str(ws.root)])
    assert res.exit_code != 0
    return res.output


@pytest.fixture()
def tiny(tmp_path: Path, tiny_encoder: Any, build_tiny_workspace: Any, db_url: str,
         monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Path]:  # fmt: skip
    """The tiny workspace with its store on SQLite and on PostgreSQL (MMGEN_DB, as a user would set it)."""
    monkeypatch.setenv("MMGEN_DB", db_url)
    return build_tiny_workspace(tmp_path, tiny_encoder)


def test_keyword_search_ranks_by_words_and_reports_its_parts(tiny: tuple[Any, Path]) -> None:
    ws, _ = tiny
    out = search(ws, "square drawing 3", "--keyword", "-k", "5")
    hits = out["hits"]
    assert out["query"]["retrieval"] == "keyword" and len(hits) == 5
    # items with all three words come first: the squares' drawing 3 (one per colour)
    assert {h["text"] for h in hits[:4]} == {f"a {c} square, drawing 3" for c in ("red", "green", "blue", "yellow")}
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    tags = search(ws, "blue", "--keyword", "-k", "40", "--to", "text")["hits"]  # metadata (color=blue) is indexed too
    assert tags and all("blue" in h["text"] for h in tags)


def test_hybrid_fuses_both_lists_with_rrf_and_convex(tiny: tuple[Any, Path]) -> None:
    ws, _ = tiny
    vector = search(ws, "a green circle, drawing 1", "-k", "10")["hits"]
    out = search(ws, "a green circle, drawing 1", "--hybrid", "-k", "10")
    assert out["query"]["retrieval"] == "hybrid" and out["query"]["fusion"] == "rrf"
    assert out["query"]["keyword_weight"] == 4.0  # the default, chosen on the development split
    for h in out["hits"]:
        parts = h["parts"]
        fused = sum(w / (RRF_K + p["rank"]) for p, w in ((parts["vector"], 1), (parts["keyword"], 4)) if p)
        assert parts["fused"] == pytest.approx(fused, abs=1e-6)
    assert [h["score"] for h in out["hits"]] == sorted((h["score"] for h in out["hits"]), reverse=True)
    # fusion rewards agreement: the best hybrid hit is in both lists
    assert out["hits"][0]["parts"]["vector"] and out["hits"][0]["parts"]["keyword"]
    # convex with alpha 1 is the vector ranking; with alpha 0 the keyword one
    pure = search(ws, "a green circle, drawing 1", "--hybrid", "--fusion", "convex", "--alpha", "1", "-k", "10")
    assert [h["id"] for h in pure["hits"]] == [h["id"] for h in vector]
    words = search(ws, "a green circle, drawing 1", "--keyword", "-k", "5")["hits"]
    only = search(ws, "a green circle, drawing 1", "--hybrid", "--fusion", "convex", "--alpha", "0", "-k", "5")
    assert [h["id"] for h in only["hits"]][:1] == [h["id"] for h in words][:1]


def test_filters_apply_inside_both_sides(tiny: tuple[Any, Path]) -> None:
    ws, _ = tiny
    for mode in ("--keyword", "--hybrid"):
        hits = search(ws, "red circle drawing", mode, "--where", "color=blue", "-k", "6")["hits"]
        assert len(hits) == 6 and all(h["meta"]["color"] == "blue" for h in hits)  # never starved by the filter


def test_group_folds_a_concept_into_one_result(tiny: tuple[Any, Path]) -> None:
    ws, _ = tiny
    out = search(ws, "a red circle", "--group", "-k", "3")
    groups = [h["group"] for h in out["hits"]]
    assert len(groups) == 3 and len(set(groups)) == 3 and out["query"]["group"] is True
    for h in out["hits"]:
        assert h["members"][0]["id"] == h["id"] and len(h["members"]) == 5  # all five drawings of the concept
    plain = search(ws, "a red circle", "-k", "3")["hits"]
    assert out["hits"][0]["id"] == plain[0]["id"]


def test_dedup_collapses_copies(tiny: tuple[Any, Path], tiny_encoder: Any) -> None:
    ws, manifest = tiny
    extra = manifest.parent.parent / "copies"
    extra.mkdir()
    for i in range(2):
        shutil.copy(manifest.parent / "red-circle-0.png", extra / f"copy{i}.png")
        (extra / f"copy{i}.txt").write_text(f"copy {i}", encoding="utf-8")
    assert runner.invoke(app, ["index", str(extra), "--workspace", str(ws.root), "--quiet"]).exit_code == 0
    image = str(manifest.parent / "red-circle-0.png")
    plain = search(ws, "--image", image, "-k", "5")["hits"]
    copies = {h["id"] for h in plain if h["key"] in ("copy0", "copy1", "red-circle-0")}
    assert len(copies) == 3 and all(h["score"] > 0.9999 for h in plain if h["id"] in copies)
    collapsed = search(ws, "--image", image, "-k", "5", "--dedup", "0.99999")["hits"]
    assert len(collapsed) == 5 and len(copies & {h["id"] for h in collapsed}) == 1  # the best-ranked copy stays
    assert collapsed[0]["id"] == plain[0]["id"]


def test_the_keyword_index_follows_indexing_and_pruning(tiny: tuple[Any, Path]) -> None:
    ws, manifest = tiny
    folder = manifest.parent.parent / "more"
    folder.mkdir()
    shutil.copy(manifest.parent / "blue-square-0.png", folder / "zebra.png")
    (folder / "zebra.txt").write_text("a zebra crossing", encoding="utf-8")
    assert runner.invoke(app, ["index", str(folder), "--workspace", str(ws.root), "--quiet"]).exit_code == 0
    assert [h["text"] for h in search(ws, "zebra", "--keyword")["hits"]] == ["a zebra crossing"]
    (folder / "zebra.png").unlink()
    (folder / "zebra.txt").unlink()
    res = runner.invoke(app, ["index", str(folder), "--workspace", str(ws.root), "--prune", "--quiet"])
    assert res.exit_code == 0, res.output
    assert search(ws, "zebra", "--keyword")["hits"] == []


def test_clear_errors(tiny: tuple[Any, Path]) -> None:
    ws, manifest = tiny
    image = str(manifest.parent / "red-circle-0.png")
    assert "needs a query text" in fails(ws, "--image", image, "--keyword")
    assert "--fusion must be one of" in fails(ws, "x", "--hybrid", "--fusion", "magic")
    assert "--alpha must be in" in fails(ws, "x", "--hybrid", "--fusion", "convex", "--alpha", "2")
    assert "not both" in fails(ws, "x", "--hybrid", "--keyword")
    assert "malformed keyword query" in fails(ws, '"open AND (', "--keyword", "--keyword-syntax", "fts")
    assert "no words" in fails(ws, "???", "--keyword")
    for bad in ("0", "1.5"):
        assert "(0, 1]" in fails(ws, "x", "--dedup", bad)
    assert "a --keyword search has none" in fails(ws, "x", "--keyword", "--mode", "codes")


def test_fuse_unit_cases() -> None:
    def hit(i: int, score: float) -> Hit:
        return Hit(id=i, score=score, modality="image", text=None, uri=None, meta={})

    vector, keyword = [hit(1, 0.9), hit(2, 0.8), hit(3, 0.1)], [hit(3, 12.0), hit(4, 3.0)]
    rrf = fuse(vector, keyword, Retrieval("hybrid", keyword_weight=1.0), 10)
    assert [h.id for h in rrf] == [3, 1, 2, 4]  # in both lists beats first in one
    assert rrf[0].parts == {"fused": round(1 / 63 + 1 / 61, 6), "vector": {"rank": 3, "score": 0.1},
                            "keyword": {"rank": 1, "score": 12.0}}  # fmt: skip
    weighted = fuse(vector, keyword, Retrieval("hybrid"), 10)  # keyword weight 4: 4 / 62 beats 1 / 61
    assert [h.id for h in weighted] == [3, 4, 1, 2]
    convex = fuse(vector, keyword, Retrieval("hybrid", "convex", 0.5), 2)
    # 1: 0.5 x 1 + 0; 3: 0 + 0.5 x 1 (a tie, broken by the better rank, then the id); 2: 0.5 x 0.875
    assert [h.id for h in convex] == [1, 3] and convex[0].score == pytest.approx(0.5)


def test_shared_ties_let_the_vector_list_order_equal_keyword_scores() -> None:
    from mmgen.hybrid import _shared_ranks, fuse_ranked

    assert _shared_ranks([(7, 5.0), (8, 5.0), (9, 2.0), (10, 2.0), (11, 1.0)]) == {7: 1, 8: 1, 9: 3, 10: 3, 11: 5}
    keyword = [(1, 3.0), (2, 3.0), (3, 3.0)]  # BM25's tie: same words, same length
    vector = [(3, 0.4), (9, 0.3), (1, 0.2)]
    plain = fuse_ranked(vector, keyword, Retrieval("hybrid"), 3)
    tied = fuse_ranked(vector, keyword, Retrieval("hybrid", shared_ties=True), 3)
    assert [i for i, _ in plain] == [1, 3, 2]  # keyword order 1, 2, 3 dominates at weight 4
    assert [i for i, _ in tied] == [3, 1, 2]  # all three share keyword rank 1; the vector list decides
    assert Retrieval("hybrid", shared_ties=True).label() == "hybrid rrf kw=4 ties"
