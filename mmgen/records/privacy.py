"""Privacy: forgetting a user (`forget`), and exports that hide who asked and what they wrote (`Redaction`).

`forget` deletes a user's prompts with their retrievals, outputs and every rating of those
outputs, plus the user's own ratings of other outputs, in one write transaction; the files those
outputs wrote are removed after it commits, and only inside the workspace's outputs folder (a
recorded path elsewhere is reported, never touched). Prompts of other users refined from a
forgotten prompt stay, with no parent.

A pseudonym is `u-` and the first 16 hex digits of HMAC-SHA256(salt, user): stable for one salt,
so one person's rows still go together, and not reversible without the salt. Without a salt one is
drawn at random and kept nowhere.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import CursorResult, Executable, delete, exists, or_, select, update
from sqlalchemy.orm import Session

from mmgen.errors import ConfigError, RecordNotFoundError
from mmgen.store.models import Feedback, IndexRow, Item, Output, Prompt, Retrieval

if TYPE_CHECKING:
    from mmgen.store.db import Store

PSEUDONYM_PREFIX = "u-"
PSEUDONYM_HEX = 16
FORGOTTEN_TABLES = ("prompts", "retrievals", "outputs", "feedback", "items")


def pseudonym(user: str, salt: str) -> str:
    """`u-` + the first 16 hex digits of HMAC-SHA256 of the user id keyed by the salt."""
    digest = hmac.new(salt.encode("utf-8"), user.encode("utf-8"), hashlib.sha256).hexdigest()
    return PSEUDONYM_PREFIX + digest[:PSEUDONYM_HEX]


@dataclass(frozen=True)
class Redaction:
    """What an export hides: user ids (replaced by salted pseudonyms when `salt` is set) and free text."""

    salt: str | None = field(default=None, repr=False)
    drop_text: bool = False

    @classmethod
    def of(cls, anonymise: bool = False, salt: str | None = None, drop_text: bool = False) -> Redaction:
        """From the export options: `anonymise` without a salt draws a random one (kept nowhere)."""
        if salt is not None and not anonymise:
            raise ConfigError("--salt only applies with --anonymise")
        if salt is not None and not salt:
            raise ConfigError("the salt must not be empty (leave --salt out to draw a random one)")
        return cls(salt if salt is not None else secrets.token_hex(32) if anonymise else None, drop_text)

    @property
    def anonymised(self) -> bool:
        """Whether user ids are replaced by pseudonyms."""
        return self.salt is not None

    def user(self, name: str | None) -> str | None:
        """The user id as the export writes it."""
        return pseudonym(name, self.salt) if name is not None and self.salt is not None else name

    def without_text(self, record: dict[str, Any], *keys: str) -> dict[str, Any]:
        """The record less `keys` (what a person wrote or showed) when dropping text; else unchanged."""
        return {k: v for k, v in record.items() if k not in keys} if self.drop_text else record


@dataclass(frozen=True)
class ForgetReport:
    """What `forget` deleted (or, in a dry run, would delete): rows per table and files."""

    user: str
    deleted: dict[str, int]  # table -> rows, every table of FORGOTTEN_TABLES
    unlinked: int  # other users' prompts refined from a forgotten one, now without a parent
    files: tuple[str, ...]  # removed from the outputs folder
    kept: tuple[str, ...] = ()  # recorded outside the outputs folder: left alone
    failed: tuple[str, ...] = ()  # "path: reason" for files that could not be removed
    dry_run: bool = False

    def to_json(self) -> dict[str, Any]:
        """`{"user", "dry_run", "deleted": {table: n}, "unlinked", "files", "kept", "failed"}`."""
        return {"user": self.user, "dry_run": self.dry_run, "deleted": dict(self.deleted), "unlinked": self.unlinked,
                "files": list(self.files), "kept": list(self.kept), "failed": list(self.failed)}  # fmt: skip


def _rows(s: Session, stmt: Executable) -> int:
    """Run a bulk DELETE or UPDATE; the number of rows it touched."""
    return int(cast(CursorResult[Any], s.execute(stmt, execution_options={"synchronize_session": False})).rowcount)


def _inside(uri: str, folder: Path) -> Path | None:
    """The recorded file, resolved, when it lies inside `folder` (symbolic links followed); else None."""
    path = Path(uri).expanduser().resolve()
    return path if path.is_relative_to(folder) else None


def forget(store: Store, user: str, outputs_dir: Path, *, dry_run: bool = False) -> ForgetReport:
    """Delete everything recorded of `user`, in one transaction, and the files their outputs wrote in `outputs_dir`.

    Deleted: the user's prompts, their retrievals and outputs, every rating of those outputs, and
    the user's ratings of other outputs. Other users' prompts refined from a forgotten one keep
    existing with `parent_id` NULL. A user the store has no prompt or rating of is a
    RecordNotFoundError, and nothing changes. `dry_run` counts the same and rolls back.
    """
    if not user:
        raise ConfigError("give the user to forget (--user)")
    folder = outputs_dir.expanduser().resolve()
    with store.session(write=True) as s:
        known = s.scalar(select(exists().where(Prompt.user == user))) or s.scalar(
            select(exists().where(Feedback.user == user))
        )
        if not known:
            raise RecordNotFoundError(
                f"no prompts or ratings of user {user!r} in the store (`mmgen history --user U` lists a user's prompts)"
            )
        mine = select(Prompt.id).where(Prompt.user == user)
        uris = list(s.scalars(select(Output.file_uri).where(Output.prompt_id.in_(mine), Output.file_uri.is_not(None))))
        deleted = {
            "feedback": _rows(s, delete(Feedback).where(or_(
                Feedback.user == user, Feedback.output_id.in_(select(Output.id).where(Output.prompt_id.in_(mine)))))),
            "retrievals": _rows(s, delete(Retrieval).where(Retrieval.prompt_id.in_(mine))),
            "outputs": _rows(s, delete(Output).where(Output.prompt_id.in_(mine))),
        }  # fmt: skip
        others = or_(Prompt.user.is_(None), Prompt.user != user)
        unlinked = _rows(s, update(Prompt).where(Prompt.parent_id.in_(mine), others).values(parent_id=None))
        # The user's own chains: unlinked too, so the delete below never depends on the order it visits rows in.
        _rows(s, update(Prompt).where(Prompt.parent_id.in_(mine)).values(parent_id=None))
        deleted["prompts"] = _rows(s, delete(Prompt).where(Prompt.user == user))
        # Their generated images indexed as synthetic items (`mmgen index outputs`): rows and items go too.
        made = list(s.scalars(select(Item.id).where(Item.synthetic.is_(True), Item.uri.in_([u for u in uris if u]))))
        _rows(s, delete(IndexRow).where(IndexRow.item_id.in_(made)))
        deleted["items"] = _rows(s, delete(Item).where(Item.id.in_(made)))
        if dry_run:
            s.rollback()
        else:
            s.commit()
    counts = {table: deleted[table] for table in FORGOTTEN_TABLES}
    targets = [(uri, _inside(uri, folder)) for uri in uris if uri]
    kept = tuple(uri for uri, path in targets if path is None)
    files: list[str] = []
    failed: list[str] = []
    for _, path in targets:
        if path is None or not path.is_file():
            continue
        try:
            if not dry_run:
                path.unlink()
            files.append(str(path))
        except FileNotFoundError:
            continue
        except OSError as exc:
            failed.append(f"{path}: {exc.strerror or exc}")
    return ForgetReport(user, counts, unlinked, tuple(files), kept, tuple(failed), dry_run)
