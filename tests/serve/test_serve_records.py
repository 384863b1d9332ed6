"""The record over a live `mmgen serve`: `/api/history` and `/api/prompts/{id}` answer what `mmgen history
--json` and `mmgen show --json` print, `/api/outputs/{id}/rate` stores feedback as the token's user, token
roles (reader, writer, admin) gate the routes, and the page's history view lists a prior search."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mmgen.cli import app
from mmgen.errors import ConfigError
from mmgen.serve.app import ServerConfig

TOKENS = ["ann:ann-secret:reader", "wes:wes-secret:writer", "bob:b0b-secret", "root-secret"]
ANN, WES, BOB, ROOT = (
    {"Authorization": f"Bearer {t}"} for t in ("ann-secret", "wes-secret", "b0b-secret", "root-secret")
)


def _cli_json(ws: Any, *args: str) -> Any:
    res = CliRunner().invoke(app, [*args, "--json", "--workspace", str(ws.root)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return json.loads(res.output)


def _search(live: Any, text: str, headers: dict[str, str] | None = None) -> int:
    status, found = live.request("/api/search", {"text": text, "k": 3}, headers=headers)
    assert status == 200, found
    return int(found["prompt_id"])


def test_history_and_prompt_detail_equal_the_cli_json(tmp_path: Path, tiny_encoder: Any, build_tiny_workspace: Any,
                                                      live_server: Any) -> None:  # fmt: skip
    ws, _ = build_tiny_workspace(tmp_path, tiny_encoder)
    live = live_server(ws, ServerConfig())  # no token: open, the caller is `http` with role admin
    assert live.request("/api/me") == (200, {"user": "http", "role": "admin"})
    first = _search(live, "a red circle")
    second = _search(live, "a blue square")
    status, listed = live.request("/api/history")
    assert status == 200 and listed == _cli_json(ws, "history")
    assert [p["id"] for p in listed["prompts"]][:2] == [second, first] and listed["prompts"][0]["hits"] == 3
    query = "?kind=search&user=http&since=1h&model=&n=1"  # empty values are no filter, as in `?kind=&user=`
    assert live.request("/api/history" + query)[1] == _cli_json(ws, "history", "--kind", "search", "--user", "http",
                                                               "--since", "1h", "-n", "1")  # fmt: skip
    assert live.request("/api/history?kind=&user=&since=&model=&n=20")[1] == listed
    status, detail = live.request(f"/api/prompts/{first}")
    assert status == 200 and detail == _cli_json(ws, "show", str(first))
    assert [r["rank"] for r in detail["retrievals"]] == [1, 2, 3] and detail["text"] == "a red circle"

    status, err = live.request("/api/prompts/999999")
    assert status == 404 and "no prompt 999999" in err["error"]
    assert live.request("/api/prompts/abc")[0] == 400
    for bad, words in (("kind=psychic", "valid choices"), ("n=0", "n must be"), ("n=many", "n must be"),
                       ("since=last+tuesday", "--since takes"), ("n=5000", "n must be")):  # fmt: skip
        status, err = live.request(f"/api/history?{bad}")
        assert status == 422 and words in err["error"], (bad, status, err)


def test_roles_gate_generate_rating_and_other_users_prompts(tmp_path: Path, tiny_encoder: Any,
                                                            build_tiny_workspace: Any, live_server: Any) -> None:  # fmt: skip
    from sqlalchemy import select

    from mmgen.store.db import open_store
    from mmgen.store.models import Feedback

    ws, _ = build_tiny_workspace(tmp_path, tiny_encoder)
    live = live_server(ws, ServerConfig(token=TOKENS))
    for headers, who in ((ANN, ("ann", "reader")), (WES, ("wes", "writer")), (BOB, ("bob", "writer")),
                         (ROOT, ("http", "admin"))):  # fmt: skip
        assert live.request("/api/me", headers=headers) == (200, {"user": who[0], "role": who[1]})
    anns, wess = _search(live, "a red circle", ANN), _search(live, "a green square", WES)  # a reader may search

    # a reader: its own history and prompts only; no generating, no rating
    status, own = live.request("/api/history", headers=ANN)
    assert status == 200 and [p["id"] for p in own["prompts"]] == [anns]
    status, err = live.request("/api/history?user=wes", headers=ANN)
    assert status == 403 and "role admin" in err["error"]
    assert live.request(f"/api/prompts/{anns}", headers=ANN)[0] == 200
    status, err = live.request(f"/api/prompts/{wess}", headers=ANN)
    assert status == 403 and "another user's" in err["error"] and "role admin" in err["error"]
    status, err = live.request("/api/generate", {"text": "a red circle"}, headers=ANN)
    assert status == 403 and "needs role writer" in err["error"] and "reader" in err["error"]
    output = live.request(f"/api/prompts/{anns}", headers=ANN)[1]["outputs"][0]["id"]
    status, err = live.request(f"/api/outputs/{output}/rate", {"score": 5}, headers=ANN)
    assert status == 403 and "needs role writer" in err["error"]

    # a writer rates (as its own user); bad scores and unknown outputs are refused with a message
    status, rated = live.request(f"/api/outputs/{output}/rate", {"score": 4, "note": "close enough"}, headers=WES)
    assert status == 200 and (rated["user"], rated["score"], rated["note"]) == ("wes", 4, "close enough")
    status, again = live.request(f"/api/outputs/{output}/rate", {"score": 2}, headers=WES)  # same user: replaced
    assert status == 200 and again["id"] == rated["id"] and again["note"] == "close enough"
    for body, code, words in (({"score": 6}, 422, "from 1 to 5"), ({"score": "5"}, 422, "from 1 to 5"), ({}, 422, "score"),
                              ({"score": 3, "note": 7}, 422, "note must be")):  # fmt: skip
        status, err = live.request(f"/api/outputs/{output}/rate", body, headers=WES)
        assert status == code and words in err["error"], (body, status, err)
    status, err = live.request("/api/outputs/999999/rate", {"score": 3}, headers=WES)
    assert status == 404 and "no output 999999" in err["error"]
    assert live.request(f"/api/outputs/{output}/rate", {"score": 3})[0] == 401  # no token at all
    with open_store(ws.db_url) as store, store.session() as s:
        rows = [(f.output_id, f.user, f.score, f.note) for f in s.scalars(select(Feedback))]
    assert rows == [(output, "wes", 2, "close enough")]

    # an admin sees everyone's history and prompts, and may filter by user
    status, everyone = live.request("/api/history", headers=ROOT)
    assert status == 200 and [p["id"] for p in everyone["prompts"]] == [wess, anns]
    assert [p["user"] for p in live.request("/api/history?user=ann", headers=ROOT)[1]["prompts"]] == ["ann"]
    status, detail = live.request(f"/api/prompts/{anns}", headers=ROOT)
    assert status == 200 and detail["outputs"][0]["feedback"][0]["user"] == "wes"
    status, err = live.request(f"/api/prompts/{anns}", headers=BOB)  # NAME:SECRET is a writer: not an admin
    assert status == 403 and "role admin" in err["error"]


def test_token_roles_parse_and_an_unknown_role_fails_with_the_choices() -> None:
    callers = ServerConfig(token=["plain", "ann:a", "bob:b:reader", "cy:c:with:colons:admin"]).callers()
    assert {k: (c.name, c.role) for k, c in callers.items()} == {
        "plain": ("http", "admin"),
        "a": ("ann", "writer"),
        "b": ("bob", "reader"),
        "c:with:colons": ("cy", "admin"),
    }
    with pytest.raises(ConfigError, match="reader, writer, admin"):
        ServerConfig(token=["ann:a:owner"])
    with pytest.raises(ConfigError, match="empty"):
        ServerConfig(token="ann::reader")


def test_the_page_history_view_lists_a_prior_search(browser: Any, tmp_path: Path, tiny_encoder: Any,
                                                    build_tiny_workspace: Any, live_server: Any) -> None:  # fmt: skip
    from selenium.webdriver.common.by import By

    ws, _ = build_tiny_workspace(tmp_path, tiny_encoder)
    live = live_server(ws, ServerConfig(token=TOKENS))
    other = _search(live, "a yellow circle", WES)  # someone else's: not in ann's list
    browser.get(live.url + "/?page=5#token=ann-secret")
    browser.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#index option"))
    browser.find_element(By.ID, "q").send_keys("a red circle, drawing 2")
    browser.find_element(By.CSS_SELECTOR, "#form button[type=submit]").click()
    grid = browser.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#grid .hit .caption"))
    shown = [c.text for c in grid]
    assert len(shown) == 5
    browser.find_element(By.ID, "hist").click()
    rows = browser.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#past li.prompt"))
    assert len(rows) == 1 and rows[0].get_attribute("data-id") != str(other)
    line = rows[0].find_element(By.CLASS_NAME, "line").text
    assert line.startswith("search · a red circle, drawing 2 · ") and line.endswith("· 5 hits")
    assert "of ann" in browser.find_element(By.ID, "past").text
    rows[0].find_element(By.CLASS_NAME, "line").click()  # its hits, from /api/prompts/{id}
    hits = browser.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#past .detail .evidence span"))
    assert [h.text.rsplit(" (", 1)[0] for h in hits] == shown  # the same hits, in rank order
    browser.find_element(By.ID, "hist").click()  # a second click closes the view
    assert not browser.find_element(By.ID, "past").is_displayed()
