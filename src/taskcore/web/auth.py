"""Bearer-token authentication with three roles: viewer < operator < admin.

Viewers read; operators cancel, retry, pause and resume; admins also purge. A token
arrives in an ``Authorization: Bearer`` header or in the HttpOnly cookie that
``POST /login`` sets (a browser's EventSource cannot send headers). With no tokens
configured, access is open: every caller is an anonymous admin.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from collections.abc import Mapping

import attrs

from taskcore.errors import ConfigurationError

__all__ = ["COOKIE", "Principal", "Role", "TokenAuth"]

COOKIE = "taskcore_token"


class Role(enum.IntEnum):
    VIEWER = 1
    OPERATOR = 2
    ADMIN = 3

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Role:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise ConfigurationError(
                f"unknown role {text!r}: use viewer, operator or admin"
            ) from None


def fingerprint(token: str) -> str:
    """A short, stable name for a token that does not reveal it (audit, rate limits)."""
    return hashlib.sha256(token.encode()).hexdigest()[:10]


@attrs.frozen
class Principal:
    """Who made a request: a role and the fingerprint of the token that proved it."""

    role: Role
    fingerprint: str
    via: str
    """``bearer``, ``cookie`` or ``open`` (no tokens configured)."""

    @property
    def who(self) -> str:
        return f"{self.role.label}:{self.fingerprint}"


class TokenAuth:
    """The configured tokens and the role each one grants.

    Args:
        tokens: token -> role name (``viewer``, ``operator`` or ``admin``); empty or
            None leaves access open.

    Raises:
        ConfigurationError: an unknown role name or an empty token.
    """

    def __init__(self, tokens: Mapping[str, str] | None = None) -> None:
        self._tokens: list[tuple[bytes, Role, str]] = []
        for token, role in (tokens or {}).items():
            if not token or token != token.strip():
                raise ConfigurationError(
                    "a web token must be non-empty and without surrounding whitespace"
                )
            self._tokens.append((token.encode(), Role.parse(role), fingerprint(token)))

    @property
    def open(self) -> bool:
        return not self._tokens

    def identify(self, bearer: str | None, cookie: str | None) -> Principal | None:
        """The principal a request's credentials prove, or None (absent or unknown token)."""
        if self.open:
            return Principal(Role.ADMIN, "anonymous", "open")
        for token, via in ((bearer, "bearer"), (cookie, "cookie")):
            if token:
                given = token.encode()
                found = None
                for known, role, print_ in self._tokens:  # compare with every one: no timing hint
                    if hmac.compare_digest(known, given):
                        found = Principal(role, print_, via)
                if found is not None:
                    return found
                return None  # a wrong header token does not fall back to the cookie
        return None
