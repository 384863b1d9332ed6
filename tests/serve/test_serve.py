"""`mmgen serve` as a live HTTP server on 127.0.0.1 over a tiny real workspace: clip-retrieval's
ClipClient, raw requests, tokens, uploads, thumbnails, and indexing while it serves."""

from __future__ import annotations

import base64
import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mmgen.errors import ConfigError
from mmgen.serve.app import ServerConfig, check_config


@pytest.fixture()
def served(tmp_path: Path, tiny_encoder, build_tiny_workspace, live_server) -> tuple[Any, Any, Path]:
    ws, manifest = build_tiny_workspace(tmp_path, tiny_encoder)
    return live_server(ws, ServerConfig()), ws, manifest


def _clip_client() -> Any:
    spec = importlib.util.find_spec("clip_retrieval")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("clip-retrieval is not installed (make setup installs it with --no-deps)")
    path = Path(list(spec.submodule_search_locations)[0]) / "clip_client.py"
    loader_spec = importlib.util.spec_from_file_location("mmgen_test_clip_client", path)
    assert loader_spec is not None and loader_spec.loader is not None
    module = importlib.util.module_from_spec(loader_spec)
    loader_spec.loader.exec_module(module)  # its package __init__ imports heavy modules: load the file alone
    return module


def test_an_unmodified_clip_client_queries_text_image_and_embedding(served) -> None:
    live, ws, manifest = served
    module = _clip_client()
    client = module.ClipClient(url=live.url + "/knn-service", indice_name="default", num_images=5, deduplicate=False)
    hits = client.query(text="a red circle")
    assert len(hits) == 5 and all({"id", "similarity", "caption", "url", "image_path"} <= set(h) for h in hits)
    assert [h["similarity"] for h in hits] == sorted((h["similarity"] for h in hits), reverse=True)
    texts = module.ClipClient(url=live.url + "/knn-service", indice_name="default", num_images=3,
                              modality=module.Modality.TEXT, deduplicate=False)  # fmt: skip
    assert texts.query(text="a red circle, drawing 2")[0]["caption"] == "a red circle, drawing 2"
    image = manifest.parent / "blue-square-0.png"
    by_image = client.query(image=str(image))
    assert by_image[0]["image_path"].endswith("blue-square-0.png") and by_image[0]["similarity"] > 0.99
    status, item = live.request(f"/api/items/{by_image[0]['id']}")
    assert status == 200 and item["caption"] == "a blue square, drawing 0"
    vector = _vector_of(live, by_image[0]["id"])
    by_vector = client.query(embedding_input=vector)
    assert by_vector[0]["id"] == by_image[0]["id"]


def _vector_of(live: Any, item_id: int) -> list[float]:
    searcher = live.server.config.app.state.service.searcher(None).searcher
    return searcher.item_vectors("image", [item_id])[0].tolist()


def test_raw_bodies_without_content_type_or_as_text_plain(served) -> None:
    live, _, _ = served
    body = json.dumps({"text": "a green square", "modality": "text", "num_images": 3, "num_result_ids": 6}).encode()
    for headers in ({}, {"Content-Type": "text/plain"}):
        status, hits = live.request("/knn-service", raw=body, headers=headers, method="POST")
        assert status == 200 and len(hits) == 6
        assert all("caption" in h for h in hits[:3]) and all(set(h) == {"id", "similarity"} for h in hits[3:])
    status, meta = live.request("/metadata", {"ids": [hits[4]["id"], 999_999], "indice_name": "default"})
    assert status == 200 and [m["id"] for m in meta] == [hits[4]["id"]] and "caption" in meta[0]["metadata"]
    assert live.request("/indices-list") == (200, ["default"])
    status, err = live.request("/knn-service", raw=b"{not json", method="POST")
    assert status == 400 and "JSON" in err["error"]
    status, err = live.request("/knn-service", {"text": "x", "indice_name": "nope"})
    assert status == 404 and "nope" in err["error"]


def test_api_search_pages_and_is_recorded(served) -> None:
    live, ws, _ = served
    status, first = live.request("/api/search", {"text": "a yellow circle", "k": 4})
    assert status == 200 and len(first["hits"]) == 4 and first["prompt_id"] is not None
    _, second = live.request("/api/search", {"text": "a yellow circle", "k": 4, "offset": 4})
    _, both = live.request("/api/search", {"text": "a yellow circle", "k": 8})
    assert [h["id"] for h in first["hits"] + second["hits"]] == [h["id"] for h in both["hits"]]
    _, filtered = live.request("/api/search", {"text": "a circle", "k": 5, "where": ["color=blue"]})
    assert filtered["hits"] and all(h["meta"]["color"] == "blue" for h in filtered["hits"])
    _, words = live.request("/api/search", {"text": "square drawing 3", "retrieval": "keyword", "k": 4})
    assert words["query"]["retrieval"] == "keyword"
    colours = ("red", "green", "blue", "yellow")
    assert {h["text"] for h in words["hits"]} == {f"a {c} square, drawing 3" for c in colours}
    _, fused = live.request("/api/search", {"text": "a blue square", "retrieval": "hybrid", "k": 5})
    assert len(fused["hits"]) == 5 and all("fused" in h["parts"] for h in fused["hits"])
    _, grouped = live.request("/api/search", {"text": "a red circle", "group_by": "group", "k": 3})
    assert len({h["group"] for h in grouped["hits"]}) == 3 and all(len(h["members"]) == 5 for h in grouped["hits"])
    for bad, words_in in (({"retrieval": "psychic"}, "retrieval must be"), ({"retrieval": "hybrid", "fusion": "x"},
                          "--fusion"), ({"group_by": "colour"}, "group_by"), ({"dedup": 3}, "(0, 1]")):  # fmt: skip
        status, err = live.request("/api/search", {"text": "a red circle", **bad})
        assert status == 400 and words_in in err["error"], err
    from sqlalchemy import func, select

    from mmgen.store.db import open_store
    from mmgen.store.models import Prompt

    with open_store(ws.db_url) as store, store.session() as s:
        assert s.scalar(select(func.count(Prompt.id))) >= 4


def test_tokens_guard_every_route_but_healthz(tmp_path: Path, tiny_encoder, build_tiny_workspace,
                                              live_server) -> None:  # fmt: skip
    ws, _ = build_tiny_workspace(tmp_path, tiny_encoder)
    live = live_server(ws, ServerConfig(token=["s3cret", "alice:4lice-token"]))
    assert live.request("/healthz")[0] == 200
    assert live.request("/")[0] == 200  # the static page holds no data; its own requests carry the token
    assert live.request("/indices-list")[0] == 401
    assert live.request("/indices-list", headers={"Authorization": "Bearer wrong"})[0] == 401
    assert live.request("/indices-list", headers={"Authorization": "Bearer alice"})[0] == 401  # a name is no token
    assert live.request("/indices-list", headers={"Authorization": "Bearer s3cret"}) == (200, ["default"])
    assert live.request("/knn-service", {"text": "a red circle"})[0] == 401
    for secret, caller in (("s3cret", "http"), ("4lice-token", "alice")):  # a named token is recorded as its caller
        status, found = live.request("/api/search", {"text": "a red circle", "k": 2},
                                     headers={"Authorization": f"Bearer {secret}"})  # fmt: skip
        assert status == 200
        from mmgen.store.db import open_store
        from mmgen.store.models import Prompt

        with open_store(ws.db_url) as store, store.session() as s:
            assert s.get(Prompt, found["prompt_id"]).user == caller
    with pytest.raises(ConfigError, match="needs a token"):
        check_config("0.0.0.0", None)
    check_config("0.0.0.0", "t")
    check_config("127.0.0.1", None)


def test_thumbnails_serve_only_files_the_store_knows(served) -> None:
    live, _, _ = served
    _, hits = live.request("/knn-service", {"text": "a red square", "num_images": 1})
    status, png = live.request(f"/image/{hits[0]['id']}?size=32")
    assert status == 200 and png[:8] == b"\x89PNG\r\n\x1a\n"
    for path in ("/image/..%2F..%2Fetc%2Fpasswd", "/image/../../etc/passwd", "/image/999999", "/image/-1"):
        status, _ = live.request(path)
        assert status in (400, 404), path
    assert live.request(f"/image/{hits[0]['id']}?size=5000")[0] == 400


def test_uploads_are_bounded_checked_and_remote_urls_are_off(served, tmp_path: Path) -> None:
    live, _, manifest = served
    good = base64.b64encode((manifest.parent / "red-circle-0.png").read_bytes()).decode()
    status, hits = live.request("/knn-service", {"image": good, "num_images": 2})
    assert status == 200 and len(hits) == 2
    status, err = live.request("/knn-service", {"image": base64.b64encode(b"not an image at all").decode()})
    assert status == 400 and "corrupt" in err["error"]
    svg = base64.b64encode(b'<svg xmlns="http://www.w3.org/2000/svg"><image href="/etc/passwd"/></svg>').decode()
    assert live.request("/knn-service", {"image": svg})[0] == 400
    assert live.request("/knn-service", {"image": "%%%not base64"})[0] == 400
    status, err = live.request("/knn-service", {"image_url": "http://127.0.0.1:1/x.png"})
    assert status == 403 and "allow-remote-urls" in err["error"]
    import http.client

    conn = http.client.HTTPConnection(live.url.removeprefix("http://"), timeout=30)
    conn.putrequest("POST", "/knn-service")
    conn.putheader("Content-Length", str(50 * 1024 * 1024))  # announced, never sent: refused before reading
    conn.endheaders()
    response = conn.getresponse()
    assert response.status == 413 and "too large" in json.loads(response.read())["error"]
    conn.close()
    big = base64.b64encode(b"\x89PNG" + bytes(21 * 1024 * 1024)).decode()  # under the body limit, over the image one
    status, err = live.request("/knn-service", {"image": big})
    assert status == 413 and "larger than" in err["error"]


def test_deduplicate_drops_near_copies(tmp_path: Path, tiny_encoder, build_tiny_workspace, live_server) -> None:
    import shutil

    from mmgen.data.sources import open_sources
    from mmgen.indexer import Indexer, IndexOptions
    from mmgen.store.db import open_store

    ws, manifest = build_tiny_workspace(tmp_path, tiny_encoder)
    extra = tmp_path / "copies"
    extra.mkdir()
    for i in range(3):  # three byte-identical copies of one drawing, with their own captions
        shutil.copy(manifest.parent / "green-circle-1.png", extra / f"copy{i}.png")
        (extra / f"copy{i}.txt").write_text(f"copy {i} of a green circle", encoding="utf-8")
    with open_store(ws.db_url) as store:
        Indexer(ws, store, tiny_encoder, IndexOptions(progress=False)).run(open_sources(str(extra)))
    live = live_server(ws, ServerConfig())
    query = {"image": base64.b64encode((extra / "copy0.png").read_bytes()).decode(), "num_images": 6}
    _, plain = live.request("/knn-service", {**query, "deduplicate": False})
    _, dedup = live.request("/knn-service", {**query, "deduplicate": True})
    copies = [h for h in plain if h["similarity"] > 0.999]
    assert len(copies) >= 4  # the original and its three copies
    assert sum(h["similarity"] > 0.999 for h in dedup) == 1 and dedup[0]["id"] == plain[0]["id"]
    searcher = live.server.config.app.state.service.searcher(None).searcher
    vectors = searcher.item_vectors("image", [h["id"] for h in dedup])
    cosines = vectors @ vectors.T
    assert (cosines[~np.eye(len(dedup), dtype=bool)] < 0.94).all()  # no kept pair is a near-copy


def test_a_search_sees_what_mmgen_index_adds_while_it_serves(served, tmp_path: Path, tiny_encoder) -> None:
    from PIL import Image

    from mmgen.data.sources import open_sources
    from mmgen.indexer import Indexer, IndexOptions
    from mmgen.store.db import open_store

    live, ws, _ = served
    live.server.config.app.state.service.config.refresh_s = 0.0  # check SQL before every query
    before = live.request("/api/search", {"text": "a purple triangle", "k": 60})[1]["hits"]
    folder = tmp_path / "more"
    folder.mkdir()
    Image.new("RGB", (40, 40), (120, 0, 160)).save(folder / "purple.png")
    (folder / "purple.txt").write_text("a purple triangle", encoding="utf-8")
    with open_store(ws.db_url) as store:
        Indexer(ws, store, tiny_encoder, IndexOptions(progress=False)).run(open_sources(str(folder)))
    after = live.request("/api/search", {"text": "a purple triangle", "k": 60, "to": "text"})[1]["hits"]
    assert len(after) == len(before) + 1 or any(h["text"] == "a purple triangle" for h in after)
    assert any(h["text"] == "a purple triangle" for h in after)


def test_knn_queries_are_recorded_after_answering_and_none_is_lost(served) -> None:
    from sqlalchemy import select

    from mmgen.store.db import open_store
    from mmgen.store.models import Prompt

    live, ws, _ = served
    service = live.server.config.app.state.service
    assert service.writer is not None  # the default: answer first, record in the writer thread
    for i in range(12):
        assert live.request("/knn-service", {"text": f"a red circle {i}", "num_images": 2})[0] == 200
    service.writer.flush()
    with open_store(ws.db_url) as store, store.session() as s:
        prompts = s.scalars(select(Prompt).order_by(Prompt.id))
        texts = [p.text for p in prompts if p.params.get("route") == "knn-service"]
    assert texts == [f"a red circle {i}" for i in range(12)] and service.writer.failed == 0  # all, in order


def test_api_search_recorded_in_the_background_on_request(served) -> None:
    from sqlalchemy import select

    from mmgen.store.db import open_store
    from mmgen.store.models import Prompt

    live, ws, _ = served
    service = live.server.config.app.state.service
    status, now = live.request("/api/search", {"text": "a green square 0", "k": 2})
    assert status == 200 and isinstance(now["prompt_id"], int)  # the default: recorded before the answer
    for i in range(1, 6):
        status, found = live.request("/api/search", {"text": f"a green square {i}", "k": 2, "record": "background"})
        assert status == 200 and found["prompt_id"] is None and len(found["hits"]) == 2
    service.writer.flush()
    with open_store(ws.db_url) as store, store.session() as s:
        texts = [p.text for p in s.scalars(select(Prompt).order_by(Prompt.id)) if p.params.get("route") == "api"]
    assert [t for t in texts if t.startswith("a green square")] == [f"a green square {i}" for i in range(6)]
    status, err = live.request("/api/search", {"text": "x", "record": "never"})
    assert status == 400 and "record must be sync or background" in err["error"]
