"""Who a `mmgen serve` token is and what it may do: `--token` values parsed into callers with a role.

A token is `SECRET` (user `http`, role admin: the single-operator server of before roles),
`NAME:SECRET` (user NAME, role writer) or `NAME:SECRET:ROLE`. Roles are ordered; each allows what
the one before it does:

- reader: search, caption, thumbnails and outputs, its own history and its own prompts;
- writer: also generate and rate;
- admin: also everyone's history and prompts.

Without any token the server is open (loopback only) and every request is `http` as admin.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mmgen.errors import ConfigError

ROLES = ("reader", "writer", "admin")
DEFAULT_CALLER = "http"
CALLER = re.compile(r"[A-Za-z0-9_.@-]{1,64}")


@dataclass(frozen=True)
class Caller:
    """The user a request is recorded as, and its role."""

    name: str
    role: str

    def allows(self, needed: str) -> bool:
        """Whether this caller's role is `needed` or above it."""
        return ROLES.index(self.role) >= ROLES.index(needed)


OPEN_CALLER = Caller(DEFAULT_CALLER, "admin")  # no token configured: today's open loopback server


def parse_token(value: str) -> tuple[str, Caller]:
    """(secret, caller) of one `--token` value: `SECRET`, `NAME:SECRET` or `NAME:SECRET:ROLE`.

    With three or more `:`-separated fields the last must be a role (ConfigError naming the valid
    ones otherwise); the secret is what lies between the name and the role.
    """
    name, sep, rest = value.partition(":")
    if not (sep and CALLER.fullmatch(name) and rest):
        return value, Caller(DEFAULT_CALLER, "admin")
    secret, sep, role = rest.rpartition(":")
    if not sep:
        return rest, Caller(name, "writer")
    if role not in ROLES:
        raise ConfigError(
            f"--token NAME:SECRET:ROLE: unknown role {role!r} for {name!r}; valid roles: {', '.join(ROLES)}"
        )
    if not secret:
        raise ConfigError(f"--token NAME:SECRET:ROLE: the secret of {name!r} is empty")
    return secret, Caller(name, role)


def role_message(caller: Caller, needed: str) -> str:
    """The 403 message of a request that needs a higher role."""
    return f"this needs role {needed} or above; the token of {caller.name!r} has role {caller.role}"
