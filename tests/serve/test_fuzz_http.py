"""Fuzzing the HTTP routes (hypothesis, bounded and derandomised as in tests/fuzz): whatever JSON a
caller sends, every route answers a status below 500 with a JSON error that names the problem, and the
server keeps answering good queries afterwards."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmgen.serve.app import ServerConfig

EXAMPLES = int(os.environ.get("MMGEN_FUZZ_EXAMPLES", "") or 60)
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])  # fmt: skip

scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40))  # fmt: skip
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                            max_size=4), max_leaves=12)
KEYS = ["text", "image", "image_url", "embedding_input", "k", "num_images", "to", "where", "mode", "retrieval",
        "group", "index", "indice_name", "modality", "ids", "n", "steps", "seed", "score", "note", "parent_id"]
bodies = st.dictionaries(st.sampled_from(KEYS), values, max_size=6) | values
POSTS = ["/api/search", "/knn-service", "/metadata", "/api/caption", "/api/generate", "/api/outputs/1/rate"]
GETS = ["/api/history?n={}", "/api/history?since={}", "/api/history?kind={}", "/api/prompts/{}", "/api/items/{}",
        "/image/{}", "/api/outputs/{}"]


def test_no_json_body_makes_a_server_error(tmp_path: Path, tiny_encoder: Any, build_tiny_workspace: Any,
                                           live_server: Any) -> None:  # fmt: skip
    ws, _ = build_tiny_workspace(tmp_path, tiny_encoder)
    live = live_server(ws, ServerConfig())
    seen: set[int] = set()

    @FUZZ
    @given(route=st.sampled_from(POSTS), body=bodies)
    def post(route: str, body: Any) -> None:
        try:
            raw = json.dumps(body).encode()
        except ValueError:  # NaN is valid for Python's json; keep what it can write
            return
        status, payload = live.request(route, raw=raw, headers={"content-type": "application/json"})
        seen.add(status)
        assert status < 500, (route, body, payload)
        if status >= 400:
            assert isinstance(payload, dict) and payload.get("error"), (route, body, payload)

    @FUZZ
    @given(route=st.sampled_from(GETS), arg=st.text(max_size=30))
    def get(route: str, arg: str) -> None:
        from urllib.parse import quote

        status, payload = live.request(route.format(quote(arg, safe="")))
        assert status < 500, (route, arg, payload)

    post()
    get()
    assert any(400 <= s < 500 for s in seen)
    status, payload = live.request("/api/search", {"text": "a red circle", "k": 3})
    assert status == 200 and len(payload["hits"]) == 3
