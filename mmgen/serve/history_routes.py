"""The record over HTTP: `GET /api/history`, `GET /api/prompts/{id}`, `POST /api/outputs/{id}/rate`, `GET /api/me`.

Each answers what the CLI prints with `--json` (`mmgen history`, `mmgen show`, `mmgen rate`) from the
same `mmgen.records` functions. A reader or writer sees its own user's prompts only; an admin sees
everyone's. Rating needs a writer and is recorded as the token's user. Also `need(role)`, the role
check every route of the app uses (roles: `mmgen.serve.access`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, Request

from mmgen.errors import ConfigError, RecordNotFoundError
from mmgen.serve.access import Caller, role_message
from mmgen.serve.app import MAX_K, HTTPError, parse_body

if TYPE_CHECKING:
    from mmgen.store.db import Store

MAX_NOTE = 4000  # characters of a rating's note
router = APIRouter()


def need(role: str) -> Any:
    """A route dependency: 403 naming the role unless the request's caller has `role` or a higher one."""

    def check(request: Request) -> None:
        caller: Caller = request.state.caller
        if not caller.allows(role):
            raise HTTPError(403, role_message(caller, role))

    return Depends(check)


@contextmanager
def _refusals() -> Iterator[None]:
    """The records layer's refusals as HTTP: an unknown id is a 404, a bad value a 422."""
    try:
        yield
    except RecordNotFoundError as exc:
        raise HTTPError(404, str(exc)) from exc
    except ConfigError as exc:
        raise HTTPError(422, str(exc)) from exc


def _store(request: Request) -> Store:
    return request.app.state.service.store


def _count(value: str) -> int:
    try:
        out = int(value)
    except ValueError:
        out = 0
    if not 1 <= out <= MAX_K:
        raise HTTPError(422, f"n must be a whole number from 1 to {MAX_K}, not {value!r}")
    return out


@router.get("/api/me")
def me(request: Request) -> Any:
    """The caller: `{"user", "role"}` (the page lists this user's history)."""
    caller: Caller = request.state.caller
    return {"user": caller.name, "role": caller.role}


@router.get("/api/history")
def history_route(
    request: Request, kind: str = "", user: str = "", since: str = "", model: str = "", n: str = "20"
) -> Any:  # fmt: skip
    """`mmgen history --json`: `{"prompts": [...]}` newest first; an empty parameter is no filter."""
    from mmgen.records import history, parse_since

    caller: Caller = request.state.caller
    if not caller.allows("admin"):
        if user and user != caller.name:
            raise HTTPError(403, f"another user's history: {role_message(caller, 'admin')}")
        user = caller.name
    limit = _count(n or "20")
    with _refusals():
        after = parse_since(since) if since else None
        prompts = history(_store(request), kind=kind or None, user=user or None, since=after, model=model or None,
                          limit=limit)  # fmt: skip
    return {"prompts": [p.to_json() for p in prompts]}


@router.get("/api/prompts/{prompt_id}")
def prompt_route(request: Request, prompt_id: int) -> Any:
    """`mmgen show ID --json`: one prompt with its parameters, hits and outputs; another user's needs admin."""
    from mmgen.records import show

    with _refusals():
        detail = show(_store(request), prompt_id)
    caller: Caller = request.state.caller
    if detail.user != caller.name and not caller.allows("admin"):
        raise HTTPError(403, f"prompt {prompt_id} is another user's: {role_message(caller, 'admin')}")
    return detail.to_json()


@router.post("/api/outputs/{output_id}/rate", dependencies=[need("writer")])
async def rate_route(request: Request, output_id: int) -> Any:
    """`mmgen rate ID --score N [--note T] --json` as the token's user: `{"score": 1..5, "note"?}`."""
    from starlette.concurrency import run_in_threadpool

    body = parse_body(await request.body(), request.app.state.service.config.max_upload_bytes)
    note = body.get("note")
    if note is not None and (not isinstance(note, str) or len(note) > MAX_NOTE):
        raise HTTPError(422, f"note must be a string of at most {MAX_NOTE} characters")
    caller: Caller = request.state.caller
    return await run_in_threadpool(_rate, _store(request), output_id, body.get("score"), note, caller.name)


def _rate(store: Store, output_id: int, score: Any, note: str | None, user: str) -> dict[str, Any]:
    from mmgen.records import rate

    with _refusals():
        return rate(store, output_id, score, note=note, user=user).to_json()
