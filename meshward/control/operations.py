"""The operator's config operations (apply, get, history, rollback, status), online or offline.

The same functions back the control plane's API and the CLI when no control plane runs (then
the CLI works on the state directory's store directly; a control plane started later serves the
latest generation). :func:`config_access` picks the path: through the running control plane
(so its sidecars are notified at once) or on the store. Results are the API's JSON shapes.
"""

from __future__ import annotations

import getpass
import os
from typing import Any, Protocol

from meshward.config.store import ApplyRefused, ConfigStore
from meshward.control.client import ControlClient, ControlRefused, operator_client
from meshward.identity.state import MeshState
from meshward.resources.loader import LoadError, load_text

__all__ = [
    "ConfigAccess",
    "ConfigError",
    "LocalConfig",
    "RemoteConfig",
    "apply_text",
    "config_access",
    "get_resources",
    "rollback_to",
]


class ConfigError(Exception):
    """The operation is refused; ``status`` is its HTTP status, ``problems`` every located error."""

    def __init__(self, status: int, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.problems = problems or []


def apply_text(store: ConfigStore, text: str, filename: str, dry_run: bool, who: str) -> dict[str, Any]:
    """Validate ``text`` as a whole, then store it as a new generation (or only plan it)."""
    try:
        resources = load_text(text, filename)
        if not resources:
            raise ConfigError(400, f"{filename}: no resources in the file (nothing to apply)")
        if dry_run:
            changes = store.plan(resources)
            return {
                "generation": store.generation(),
                "changed": False,
                "dry_run": True,
                "changes": [c.to_json() | {"diff": c.diff} for c in changes],
            }
        return store.apply(resources, who).to_json()
    except LoadError as exc:
        raise ConfigError(400, str(exc), [str(p) for p in exc.problems]) from None
    except ApplyRefused as exc:
        raise ConfigError(400, str(exc)) from None


def rollback_to(store: ConfigStore, generation: Any, who: str) -> dict[str, Any]:
    if not isinstance(generation, int) or isinstance(generation, bool):
        raise ConfigError(400, "generation must be an integer")
    try:
        return store.rollback(generation, who).to_json()
    except KeyError:
        raise ConfigError(404, f"no generation {generation} (see `meshward history`)") from None


def get_resources(store: ConfigStore, kind: str, name: str | None, namespace: str | None) -> dict[str, Any]:
    try:
        found = store.get(kind, name or None, namespace or None)
    except KeyError as exc:
        raise ConfigError(400, str(exc.args[0])) from None
    return {"generation": store.generation(), "items": [r.to_doc() for r in found]}


def _user() -> str:
    """Who runs this CLI, for the history (informative: the operator certificate is the proof)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


class ConfigAccess(Protocol):
    """What the CLI's config commands need, wherever the config lives."""

    where: str

    def apply(self, text: str, filename: str, dry_run: bool) -> dict[str, Any]: ...
    def get(self, kind: str, name: str | None, namespace: str | None) -> dict[str, Any]: ...
    def history(self) -> dict[str, Any]: ...
    def rollback(self, generation: int) -> dict[str, Any]: ...


class LocalConfig:
    """Operations on the state directory's store (no control plane running)."""

    def __init__(self, state: MeshState) -> None:
        self.store = ConfigStore(state.db_path, state.trust_domain)
        self.who = f"{_user()} (local)"
        self.where = str(state.db_path)

    def apply(self, text: str, filename: str, dry_run: bool) -> dict[str, Any]:
        return apply_text(self.store, text, filename, dry_run, self.who)

    def get(self, kind: str, name: str | None, namespace: str | None) -> dict[str, Any]:
        return get_resources(self.store, kind, name, namespace)

    def history(self) -> dict[str, Any]:
        return {"generations": [g.to_json() for g in self.store.history()]}

    def rollback(self, generation: int) -> dict[str, Any]:
        return rollback_to(self.store, generation, self.who)


class RemoteConfig:
    """Operations through the running control plane, authenticated as the operator."""

    def __init__(self, client: ControlClient) -> None:
        self.client = client
        self.where = client.url
        self._headers = {"X-Meshward-User": _user()}

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            return self.client.request(method, path, body, headers=self._headers)[1]
        except ControlRefused as exc:
            problems = exc.body.get("problems")
            raise ConfigError(
                exc.status, str(exc), problems if isinstance(problems, list) else None
            ) from None

    def apply(self, text: str, filename: str, dry_run: bool) -> dict[str, Any]:
        return self._call(
            "POST", "/v1/config/apply", {"text": text, "filename": filename, "dry_run": dry_run}
        )

    def get(self, kind: str, name: str | None, namespace: str | None) -> dict[str, Any]:
        from urllib.parse import urlencode

        query = urlencode({k: v for k, v in (("kind", kind), ("name", name), ("namespace", namespace)) if v})
        return self._call("GET", f"/v1/config/get?{query}")

    def history(self) -> dict[str, Any]:
        return self._call("GET", "/v1/config/history")

    def rollback(self, generation: int) -> dict[str, Any]:
        return self._call("POST", "/v1/config/rollback", {"generation": generation})


def config_access(state: MeshState) -> ConfigAccess:
    """Through the running control plane if there is one, else on the store directly."""
    client = operator_client(state)
    if client is not None:
        return RemoteConfig(client)
    return LocalConfig(state)
