"""Login tokens are one-time and expire; sessions and CSRF tokens are checked exactly."""

from __future__ import annotations

import stat
import time
from pathlib import Path

from meshward.dashboard.auth import LoginTokens, Sessions


def test_a_login_token_works_once_and_its_file_is_private(tmp_path: Path) -> None:
    tokens = LoginTokens(tmp_path / "dashboard")
    token = tokens.mint()
    assert token not in tokens.path.read_text()  # only its hash is stored
    assert stat.S_IMODE(tokens.path.stat().st_mode) == 0o600
    assert not tokens.redeem(token[:-1] + ("A" if token[-1] != "A" else "B"))
    assert not tokens.redeem("")
    assert tokens.redeem(token)
    assert not tokens.redeem(token)


def test_tokens_expire_and_others_stay_valid(tmp_path: Path) -> None:
    tokens = LoginTokens(tmp_path)
    old = tokens.mint(ttl=-1)
    kept = tokens.mint()
    assert not tokens.redeem(old)
    assert tokens.redeem(kept)


def test_sessions_and_csrf() -> None:
    sessions = Sessions()
    sid, session = sessions.create()
    assert sessions.get(sid) is session
    assert sessions.get(sid + "x") is None and sessions.get(None) is None
    assert Sessions.csrf_ok(session, session.csrf)
    assert not Sessions.csrf_ok(session, None) and not Sessions.csrf_ok(session, session.csrf + "x")
    sessions.end(sid)
    assert sessions.get(sid) is None
    short = Sessions(ttl=-1)
    sid, _ = short.create()
    assert short.get(sid) is None
    assert time.time() > 0
