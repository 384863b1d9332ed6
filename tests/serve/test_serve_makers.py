"""`POST /api/caption` and `POST /api/generate` on a live server over a tiny real workspace with a real
(briefly trained) captioner and generator: answers, PNGs by URL, recording with the caller, and refusals."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mmgen.cli import app
from mmgen.serve.app import ServerConfig

AUTH = {"Authorization": "Bearer b0b-secret"}


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors on 2 cores: one thread avoids OpenMP spin contention
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory, tiny_encoder: Any) -> tuple[Any, Path]:
    """The tiny hashing workspace (24 captioned drawings) plus a captioner and a generator trained for a few steps."""
    import importlib.util
    import sys

    name = "mmgen_tests_tiny_workspace"
    if name not in sys.modules:
        path = Path(__file__).resolve().parents[1] / "hashing" / "tiny_workspace.py"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    ws, manifest = sys.modules[name].build(tmp_path_factory.mktemp("makers"), tiny_encoder, per_group=3)
    runner = CliRunner()
    for args in (
        ["train", "captioner", "--steps", "4", "--batch-size", "8", "-k", "3", "--quiet"],
        ["train", "generator", "--preset", "tiny", "--steps", "3", "--image-size", "16", "-k", "2", "--quiet"],
    ):
        res = runner.invoke(app, [*args, "--workspace", str(ws.root), "--device", "cpu"], catch_exceptions=False)
        assert res.exit_code == 0, res.output
    return ws, manifest


@pytest.fixture()
def live(made: tuple[Any, Path], live_server: Any) -> Any:
    return live_server(made[0], ServerConfig(token=["bob:b0b-secret", "plain-secret"], device="cpu"))


def _prompt(ws: Any, prompt_id: int) -> Any:
    from mmgen.store.db import open_store
    from mmgen.store.models import Prompt

    with open_store(ws.db_url) as store, store.session() as s:
        prompt = s.get(Prompt, prompt_id)
        return prompt.kind, prompt.user, prompt.image_uri, len(prompt.retrievals), len(prompt.outputs)


def test_caption_an_upload_with_its_evidence_recorded_for_the_caller(made: tuple[Any, Path], live: Any) -> None:
    ws, manifest = made
    image = base64.b64encode((manifest.parent / "red-circle-1.png").read_bytes()).decode()
    status, out = live.request("/api/caption", {"image": image}, headers=AUTH)
    assert status == 200, out
    assert isinstance(out["caption"], str) and out["image"] == "upload" and out["model"] == "captioner"
    assert len(out["retrieved"]) == 3 and all({"id", "text", "score"} <= set(r) for r in out["retrieved"])
    assert _prompt(ws, out["prompt_id"]) == ("caption", "bob", "upload", 3, 1)
    status, again = live.request("/api/caption", {"image": image, "k": 2, "decode": "greedy"}, headers=AUTH)
    assert status == 200 and len(again["retrieved"]) == 2
    plain = {"Authorization": "Bearer plain-secret"}
    status, other = live.request("/api/caption", {"image": image}, headers=plain)
    assert status == 200 and _prompt(ws, other["prompt_id"])[1] == "http"  # an unnamed token: the default caller


def test_requests_record_the_prompt_they_refine(made: tuple[Any, Path], live: Any) -> None:
    from mmgen.records import lineage
    from mmgen.store.db import open_store

    ws, manifest = made
    _, found = live.request("/api/search", {"text": "a red circle", "k": 3}, headers=AUTH)
    image = base64.b64encode((manifest.parent / "red-circle-1.png").read_bytes()).decode()
    _, cap = live.request("/api/caption", {"image": image, "parent_id": found["prompt_id"]}, headers=AUTH)
    _, more = live.request("/api/search", {"text": cap["caption"] or "x", "parent_id": cap["prompt_id"]}, headers=AUTH)
    with open_store(ws.db_url) as store:
        chain = [(depth, node.id) for depth, node in lineage(store, more["prompt_id"]).walk()]
    assert chain == [(0, found["prompt_id"]), (1, cap["prompt_id"]), (2, more["prompt_id"])]
    status, err = live.request("/api/search", {"text": "x", "parent_id": 999_999}, headers=AUTH)
    assert status == 404 and "no prompt 999999" in err["error"]
    assert live.request("/api/generate", {"text": "x", "parent_id": "one"}, headers=AUTH)[0] == 400


def test_caption_refuses_bad_requests_with_a_message(live: Any) -> None:
    cases = [
        ({}, 400, "give image"),
        ({"image": base64.b64encode(b"no picture").decode()}, 400, "corrupt"),
        ({"image": "%%%"}, 400, "base64"),
        ({"image": base64.b64encode(b"\x89PNG").decode(), "decode": "telepathy"}, 400, "corrupt"),
        ({"image": base64.b64encode(b"\x89PNG" + bytes(21 * 1024 * 1024)).decode()}, 413, "larger than"),
    ]
    for body, code, words in cases:
        status, err = live.request("/api/caption", body, headers=AUTH)
        assert status == code and words in err["error"], (body.keys(), status, err)


def test_generate_answers_urls_of_pngs_recorded_in_the_store(made: tuple[Any, Path], live: Any) -> None:
    ws, _ = made
    body = {"text": "a blue square", "n": 2, "steps": 2, "seed": 11}
    status, out = live.request("/api/generate", body, headers=AUTH)
    assert status == 200, out
    assert out["seed"] == 11 and len(out["urls"]) == 2 and len(out["retrieved"]) == 2 and "files" not in out
    assert _prompt(ws, out["prompt_id"]) == ("generate", "bob", None, 2, 2)
    pictures = []
    for url in out["urls"]:
        status, png = live.request(url, headers=AUTH)
        assert status == 200 and png[:8] == b"\x89PNG\r\n\x1a\n"
        pictures.append(png)
    _, same = live.request("/api/generate", body, headers=AUTH)
    assert [live.request(u, headers=AUTH)[1] for u in same["urls"]] == pictures  # same seed, same bytes
    assert live.request("/api/outputs/999999", headers=AUTH)[0] == 404
    assert live.request(out["urls"][0])[0] == 401  # outputs need the token like every other route


def test_generate_refuses_bad_requests_with_a_message(live: Any) -> None:
    cases = [
        ({}, "give text"),
        ({"text": "   "}, "empty prompt"),
        ({"text": "x", "n": 50}, "n must be in"),
        ({"text": "x", "steps": 0}, "steps must be in"),
        ({"text": "x", "init_strength": 2}, "strength"),
        ({"text": "x", "guidance": "lots"}, "numbers"),
        ({"text": "x", "model": "../../etc"}, "plain name"),
        ({"text": "x", "model": "nope"}, "nope"),
        ({"text": "x", "seed": -1}, "seed must be in"),
    ]
    for body, words in cases:
        status, err = live.request("/api/generate", body, headers=AUTH)
        assert status == 400 and words in err["error"], (body, status, err)


def test_the_page_generates_and_captions_showing_the_evidence(made: tuple[Any, Path], live: Any, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    browser.get(live.url + "/#token=b0b-secret")  # the page sends the token from the URL fragment
    browser.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#index option"))
    browser.find_element(By.ID, "q").send_keys("a green circle")
    browser.find_element(By.ID, "gen").click()
    pictures = browser.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#made img.out"), timeout=120)
    assert len(pictures) == 4
    browser.until(lambda d: d.execute_script(
        "return [...document.querySelectorAll('#made img.out')].every(i => i.complete && i.naturalWidth === 16);"))
    assert "grounded on:" in browser.find_element(By.CSS_SELECTOR, "#made .evidence").text
    browser.find_elements(By.CSS_SELECTOR, "#made .pic")[1].find_elements(By.CSS_SELECTOR, ".rate button")[3].click()
    browser.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#made .pic .rate button.on"))  # rated 4, as bob
    from sqlalchemy import select

    from mmgen.store.db import open_store
    from mmgen.store.models import Feedback, Output

    with open_store(made[0].db_url) as store, store.session() as s:
        rated = s.execute(select(Feedback.user, Feedback.score, Output.file_uri).join(Output)).all()
    assert [(user, score) for user, score, _ in rated] == [("bob", 4)] and rated[0][2].endswith(".png")
    browser.find_element(By.CSS_SELECTOR, "#form button[type=submit]").click()
    button = browser.until(lambda d: d.find_elements(By.XPATH, "//div[@id='grid']//button[.='caption this image']"))
    button[0].click()
    line = browser.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#made .caption-out"), timeout=120)
    assert line[0].text.startswith("caption:") and "captioner" in line[0].text
    assert len(browser.find_elements(By.CSS_SELECTOR, "#made .evidence span")) == 3  # the 3 captions it was grounded on
