"""Who may see the dashboard: one-time login tokens, session cookies and CSRF tokens.

``meshward dashboard`` mints a login token (:meth:`LoginTokens.mint`): its SHA-256 is added to
``<state>/dashboard/login-tokens.json`` (0600; the token itself is only printed, inside the
URL). The server redeems it once (:meth:`LoginTokens.redeem`, every stored hash compared with
``hmac.compare_digest``) for a session: a random cookie (HttpOnly, SameSite=Strict) and a CSRF
token that every state-changing request must carry. Unused tokens expire after ``TOKEN_TTL``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["SESSION_COOKIE", "SESSION_TTL", "TOKEN_TTL", "LoginTokens", "Session", "Sessions"]

TOKEN_TTL = 600.0
SESSION_TTL = 12 * 3600.0
SESSION_COOKIE = "meshward_session"
_MAX_TOKENS = 64
_MAX_SESSIONS = 256


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


class LoginTokens:
    """The pending login tokens of one state directory (shared by the CLI and the server)."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "login-tokens.json"
        self.lock_path = directory / "login-tokens.lock"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[list[dict[str, Any]]]:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                entries = json.loads(self.path.read_text())
                if not isinstance(entries, list):
                    entries = []
            except (OSError, ValueError):
                entries = []
            now = time.time()
            pending = [e for e in entries if isinstance(e, dict) and float(e.get("expires", 0)) > now]
            yield pending
            tmp = self.path.with_suffix(".tmp")
            fd_out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd_out, "w") as fh:
                json.dump(pending[-_MAX_TOKENS:], fh)
            os.replace(tmp, self.path)
        finally:
            os.close(fd)

    def mint(self, ttl: float = TOKEN_TTL) -> str:
        token = secrets.token_urlsafe(32)
        with self._locked() as pending:
            pending.append({"sha256": _digest(token), "expires": time.time() + ttl})
        return token

    def redeem(self, token: str) -> bool:
        """True (and the token is used up) if ``token`` is a pending login token."""
        wanted = _digest(token)
        with self._locked() as pending:
            found = None
            for entry in pending:  # every entry compared: the time taken says nothing
                if hmac.compare_digest(str(entry.get("sha256", "")), wanted) and found is None:
                    found = entry
            if found is not None:
                pending.remove(found)
            return found is not None


@dataclass(slots=True)
class Session:
    csrf: str
    expires: float


class Sessions:
    """Logged-in browsers, in memory (a restarted dashboard asks for a new login)."""

    def __init__(self, ttl: float = SESSION_TTL) -> None:
        self.ttl = ttl
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def create(self) -> tuple[str, Session]:
        sid = secrets.token_urlsafe(32)
        session = Session(secrets.token_urlsafe(24), time.time() + self.ttl)
        with self._lock:
            now = time.time()
            self._sessions = {k: s for k, s in self._sessions.items() if s.expires > now}
            if len(self._sessions) >= _MAX_SESSIONS:
                oldest = min(self._sessions, key=lambda k: self._sessions[k].expires)
                del self._sessions[oldest]
            self._sessions[_digest(sid)] = session
        return sid, session

    def get(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        with self._lock:
            session = self._sessions.get(_digest(sid))
        if session is None or session.expires <= time.time():
            return None
        return session

    def end(self, sid: str) -> None:
        with self._lock:
            self._sessions.pop(_digest(sid), None)

    @staticmethod
    def csrf_ok(session: Session, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(session.csrf, presented)
