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

from meshward.config.store import ApplyRefused, ConfigStore, resolve_kind
from meshward.control.client import ControlClient, ControlRefused, operator_client
from meshward.identity.state import MeshState
from meshward.resources.loader import LoadError, load_text

__all__ = [
    "ConfigAccess",
    "ConfigError",
    "LocalConfig",
    "RemoteConfig",
    "apply_text",
    "compare_generations",
    "config_access",
    "delete_resources",
    "get_resources",
    "history_of",
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


def get_resources(
    store: ConfigStore, kind: str, name: str | None, namespace: str | None, generation: int | None = None
) -> dict[str, Any]:
    """Resources of one kind (optionally one name/namespace) of the current or a past generation."""
    try:
        kind = resolve_kind(kind)
    except KeyError as exc:
        raise ConfigError(400, str(exc.args[0])) from None
    try:
        everything = store.resources(generation)
    except KeyError:
        raise ConfigError(404, f"no generation {generation} (see `meshward history`)") from None
    found = [
        r
        for r in everything
        if r.kind == kind
        and (not name or r.metadata.name == name)
        and (not namespace or r.metadata.namespace == namespace)
    ]
    gen = generation if generation is not None else store.generation()
    return {"generation": gen, "items": [r.to_doc() for r in found]}


def delete_resources(store: ConfigStore, targets: Any, who: str) -> dict[str, Any]:
    """A new generation without ``targets`` (``[{"kind", "namespace", "name"}]``), all or none."""
    if not isinstance(targets, list) or not targets:
        raise ConfigError(400, "'resources' (a non-empty list of {kind, namespace, name}) is required")
    keys: list[tuple[str, str, str]] = []
    for t in targets:
        if not isinstance(t, dict) or not all(
            isinstance(t.get(f), str) and t.get(f) for f in ("kind", "name")
        ):
            raise ConfigError(400, "each resource to delete needs a kind and a name")
        try:
            kind = resolve_kind(t["kind"])
        except KeyError as exc:
            raise ConfigError(400, str(exc.args[0])) from None
        keys.append((kind, str(t.get("namespace") or "default"), t["name"]))
    try:
        return store.delete(keys, who).to_json()
    except KeyError as exc:
        raise ConfigError(404, str(exc.args[0])) from None


def compare_generations(store: ConfigStore, before: Any, after: Any) -> dict[str, Any]:
    """What changed from one generation to another, with a YAML diff per configured resource."""
    if not all(isinstance(g, int) and not isinstance(g, bool) and g >= 0 for g in (before, after)):
        raise ConfigError(400, "generations must be non-negative integers")
    try:
        changes = store.compare(before, after)
    except KeyError as exc:
        raise ConfigError(404, f"{exc.args[0]} (see `meshward history`)") from None
    return {"from": before, "to": after, "changes": [c.to_json() | {"diff": c.diff} for c in changes]}


def history_of(store: ConfigStore) -> dict[str, Any]:
    """Every generation, with the resources it changed (against the generation before it)."""
    generations = []
    for g in store.history():
        changed = store.compare(g.generation - 1, g.generation) if g.generation > 1 else store.compare(0, 1)
        generations.append(g.to_json() | {"changes": [c.to_json() for c in changed]})
    return {"generations": generations}


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
    def get(
        self, kind: str, name: str | None, namespace: str | None, generation: int | None = None
    ) -> dict[str, Any]: ...
    def history(self) -> dict[str, Any]: ...
    def rollback(self, generation: int) -> dict[str, Any]: ...
    def delete(self, targets: list[dict[str, str]]) -> dict[str, Any]: ...
    def compare(self, before: int, after: int) -> dict[str, Any]: ...


class LocalConfig:
    """Operations on the state directory's store (no control plane running)."""

    def __init__(self, state: MeshState) -> None:
        self.store = ConfigStore(state.db_path, state.trust_domain)
        self.who = f"{_user()} (local)"
        self.where = str(state.db_path)

    def apply(self, text: str, filename: str, dry_run: bool) -> dict[str, Any]:
        return apply_text(self.store, text, filename, dry_run, self.who)

    def get(
        self, kind: str, name: str | None, namespace: str | None, generation: int | None = None
    ) -> dict[str, Any]:
        return get_resources(self.store, kind, name, namespace, generation)

    def history(self) -> dict[str, Any]:
        return history_of(self.store)

    def rollback(self, generation: int) -> dict[str, Any]:
        return rollback_to(self.store, generation, self.who)

    def delete(self, targets: list[dict[str, str]]) -> dict[str, Any]:
        return delete_resources(self.store, targets, self.who)

    def compare(self, before: int, after: int) -> dict[str, Any]:
        return compare_generations(self.store, before, after)


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

    def get(
        self, kind: str, name: str | None, namespace: str | None, generation: int | None = None
    ) -> dict[str, Any]:
        from urllib.parse import urlencode

        fields = (("kind", kind), ("name", name), ("namespace", namespace))
        query = {k: v for k, v in fields if v} | (
            {"generation": str(generation)} if generation is not None else {}
        )
        return self._call("GET", f"/v1/config/get?{urlencode(query)}")

    def delete(self, targets: list[dict[str, str]]) -> dict[str, Any]:
        return self._call("POST", "/v1/config/delete", {"resources": targets})

    def compare(self, before: int, after: int) -> dict[str, Any]:
        return self._call("GET", f"/v1/config/diff?from={before}&to={after}")

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
