"""``meshward dashboard [--print-url] [--port N]``: open the running mesh's web dashboard.

Finds the mesh's dashboard (or starts it: a loopback-only process of its own that stops when
the mesh stops) and prints its URL with a new one-time login token on the last line. Without
``--print-url`` it also asks the desktop to open a browser, if there is one.
"""

from __future__ import annotations

import argparse

from meshward.cli.errors import CliError

__all__ = ["register"]


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "dashboard",
        parents=[common],
        help="the web dashboard: prints its URL with a login token",
        description="Start (or find) the mesh's loopback web dashboard; print its URL with a one-time "
        "login token on the last line.",
    )
    p.add_argument("--print-url", action="store_true", help="print the login URL and return (no browser)")
    p.add_argument("--port", type=int, default=0, help="port to start it on (default: a free one)")
    p.set_defaults(func=dashboard)


def dashboard(args: argparse.Namespace) -> int:
    from meshward.dashboard.launch import DashboardUnavailable, find_dashboard, login_url, start_dashboard
    from meshward.dashboard.view import MeshView
    from meshward.identity.state import MeshState, MeshStateError

    state = MeshState(args.state)
    try:
        running = MeshView(state.path).mesh_running()
    except MeshStateError as exc:
        raise CliError(str(exc)) from None
    if not running:
        raise CliError(
            f"no mesh is running in {state.path} (start it with `meshward up -f MESH.yaml --detach`)"
        )
    url = find_dashboard(state.path)
    if url is None:
        try:
            url = start_dashboard(state.path, args.port)
        except DashboardUnavailable as exc:
            raise CliError(f"dashboard: {exc}") from None
    login = login_url(state.path, url)
    if not args.print_url:
        opened = _open_browser(login)
        print(f"dashboard {url} ({'opened in a browser' if opened else 'open this link in a browser'}):")
    print(login, flush=True)
    return 0


def _open_browser(url: str) -> bool:
    """Ask the desktop to open ``url``; only with a display (never a text browser in this terminal)."""
    import os
    import sys
    import webbrowser

    if sys.platform != "darwin" and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False
    try:
        return webbrowser.open(url)
    except webbrowser.Error:
        return False
