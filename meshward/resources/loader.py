"""The YAML loader: multi-document text in, validated resources out, or one precise refusal.

A file is accepted as a whole or refused as a whole. Every problem names the place a user must
edit, as ``FILE:LINE: Kind ns/name: field.path: message`` where LINE is the line of the offending
field (found by walking PyYAML's composed node tree along pydantic's error location) and the
field path is spelled as in YAML (camelCase aliases, ``[i]`` for list items).

Refused besides schema errors: invalid YAML, duplicate mapping keys (YAML allows the last one to
win silently, which would hide a typo in a policy), unknown kinds, an ``apiVersion`` the kind does
not accept, the same resource twice in one file, and more than one ``Mesh``.

Pure: no file system access except :func:`load_file`, which reads the file and calls
:func:`load_text`. Never raises anything but :class:`LoadError` on any input text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from meshward.resources.base import KINDS, Resource

__all__ = ["LoadError", "Problem", "load_file", "load_text"]

# A YAML file with more nodes than this (after alias expansion) is refused: protects the
# control plane from alias bombs ("billion laughs") in an applied file.
MAX_NODES = 100_000
MAX_DEPTH = 64


UNREADABLE = "unreadable file"  # a Problem's subject when the file cannot be read at all


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong in the file, located for the user."""

    filename: str
    line: int  # 1-based
    subject: str  # "Kind ns/name" or "document N"
    path: str  # YAML field path, "" when the whole document is at fault
    message: str

    def __str__(self) -> str:
        if self.subject == UNREADABLE:  # the one wording the CLI uses for a missing file
            return f"cannot read {self.filename}: {self.message}"
        where = f"{self.filename}:{self.line}: {self.subject}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class LoadError(ValueError):
    """The file is refused as a whole (the author's fault); ``problems`` lists every reason."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        first = str(self.problems[0]) if self.problems else "invalid file"
        more = len(self.problems) - 1
        super().__init__(first + (f" (and {more} more problem{'s' * (more > 1)})" if more else ""))


class _Refused(Exception):
    def __init__(self, node: Node, path: str, message: str) -> None:
        self.node, self.path, self.message = node, path, message


class _Converter:
    """Composed nodes → plain Python, refusing duplicate keys and oversized documents."""

    def __init__(self) -> None:
        self._constructor = yaml.SafeLoader("")
        self._count = 0

    def convert(self, node: Node, path: str = "", depth: int = 0) -> Any:
        self._count += 1
        if self._count > MAX_NODES:
            raise _Refused(node, path, f"document too large (more than {MAX_NODES} nodes)")
        if depth > MAX_DEPTH:
            raise _Refused(node, path, f"nested deeper than {MAX_DEPTH} levels")
        if isinstance(node, MappingNode):
            self._constructor.flatten_mapping(node)  # resolve "<<" merge keys
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = self.convert(key_node, path, depth + 1)
                if not isinstance(key, str | int | float | bool) and key is not None:
                    raise _Refused(key_node, path, "mapping keys must be scalars")
                if key in out:
                    raise _Refused(key_node, _join(path, str(key)), f"duplicate key {key!r}")
                out[key] = self.convert(value_node, _join(path, str(key)), depth + 1)
            return out
        if isinstance(node, SequenceNode):
            return [self.convert(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(node.value)]
        assert isinstance(node, ScalarNode)
        try:
            return self._constructor.construct_object(node, deep=True)
        except Exception as exc:  # PyYAML's constructors raise YAMLError but also ValueError etc.
            raise _Refused(node, path, f"invalid value: {getattr(exc, 'problem', None) or exc}") from None


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


def _subject(data: Any, index: int) -> str:
    if not isinstance(data, dict) or not isinstance(data.get("kind"), str):
        return f"document {index + 1}"
    meta = data.get("metadata")
    meta = meta if isinstance(meta, dict) else {}
    ns = meta.get("namespace", "default")
    name = meta.get("name", "?")
    return f"{data['kind']} {ns}/{name}"


def _aliases(model: type[BaseModel] | None) -> dict[str, str]:
    if model is None:
        return {}
    return {name: f.alias for name, f in model.model_fields.items() if f.alias}


def _locate(root: Node, loc: tuple[int | str, ...], model: type[BaseModel] | None) -> tuple[int, str]:
    """Walk the node tree along a pydantic error location → (line, YAML field path)."""
    node, line, path = root, _line(root), ""
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(node, SequenceNode) and isinstance(part, int):
            if 0 <= part < len(node.value):
                node = node.value[part]
                line = _line(node)
            path += f"[{part}]"
            continue
        if isinstance(node, MappingNode) and isinstance(part, str):
            wanted = {part, _aliases(model).get(part, part)}
            for key_node, value_node in node.value:
                if isinstance(key_node, ScalarNode) and key_node.value in wanted:
                    path = _join(path, str(key_node.value))
                    node, line = value_node, _line(key_node)
                    break
            else:
                if last:  # a missing field: point at the mapping that lacks it
                    path = _join(path, _aliases(model).get(part, part))
                # else: a union/validator tag in pydantic's location, not a YAML key
            continue
        # A scalar (or a type tag after it): the rest of the location names pydantic's union
        # members, not YAML; the node reached so far is the offending one.
    return line, path


def _validate_document(node: Node, data: Any, index: int, filename: str) -> Resource[Any]:
    subject = _subject(data, index)

    def problem(at: Node, path: str, message: str) -> LoadError:
        return LoadError([Problem(filename, _line(at), subject, path, message)])

    if not isinstance(data, dict) or not isinstance(node, MappingNode):
        raise problem(node, "", "a resource must be a mapping with apiVersion, kind, metadata and spec")
    keys = {k.value: (k, v) for k, v in node.value if isinstance(k, ScalarNode)}
    kind = data.get("kind")
    if not isinstance(kind, str):
        raise problem(keys["kind"][0] if "kind" in keys else node, "kind", "a string kind is required")
    cls = KINDS.get(kind)
    if cls is None:
        known = ", ".join(sorted(KINDS))
        raise problem(keys["kind"][1], "kind", f"unknown kind {kind!r} (known: {known})")
    version = data.get("apiVersion")
    if version not in cls.api_versions:
        at = keys["apiVersion"][1] if "apiVersion" in keys else node
        accepted = ", ".join(cls.api_versions)
        raise problem(at, "apiVersion", f"{version!r} is not accepted for {kind} (use {accepted})")
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            line, path = _locate(node, tuple(err["loc"]), cls)
            problems.append(Problem(filename, line, subject, path, _message(err)))
        raise LoadError(problems) from None


def _message(err: Any) -> str:
    msg = str(err.get("msg", "invalid"))
    if err.get("type") == "extra_forbidden":
        return "unknown field (check its spelling)"
    if err.get("type") == "missing":
        return "required field is missing"
    return msg


def load_text(text: str | bytes, filename: str = "<input>") -> list[Resource[Any]]:
    """Parse and validate every document; raise :class:`LoadError` if anything is wrong."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise LoadError([Problem(filename, 1, "file", "", f"not UTF-8 text: {exc.reason}")]) from None
    try:
        nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = int(mark.line) + 1 if mark is not None else 1
        reason = exc.problem or exc.context or "syntax error"
        raise LoadError([Problem(filename, line, "file", "", f"invalid YAML: {reason}")]) from None
    except (yaml.YAMLError, RecursionError, ValueError) as exc:
        raise LoadError([Problem(filename, 1, "file", "", f"invalid YAML: {exc}")]) from None

    resources: list[Resource[Any]] = []
    seen: dict[tuple[str, str, str], int] = {}
    converter = _Converter()
    for index, node in enumerate(n for n in nodes if n is not None):
        try:
            data = converter.convert(node)
        except _Refused as exc:
            raise LoadError(
                [Problem(filename, _line(exc.node), f"document {index + 1}", exc.path, exc.message)]
            ) from None
        except RecursionError:
            raise LoadError(
                [Problem(filename, _line(node), f"document {index + 1}", "", "nested too deeply")]
            ) from None
        if data is None:
            continue
        resource = _validate_document(node, data, index, filename)
        if resource.key in seen:
            raise LoadError(
                [
                    Problem(
                        filename,
                        _line(node),
                        resource.ref,
                        "",
                        f"defined twice in this file (first at line {seen[resource.key]})",
                    )
                ]
            )
        seen[resource.key] = _line(node)
        resources.append(resource)
    meshes = [r for r in resources if r.kind == "Mesh"]
    if len(meshes) > 1:
        second = meshes[1]
        raise LoadError([Problem(filename, seen[second.key], second.ref, "", "a mesh has one Mesh resource")])
    return resources


def load_file(path: Path) -> list[Resource[Any]]:
    """Read ``path`` and :func:`load_text` it; a missing file is a :class:`LoadError` too."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise LoadError([Problem(str(path), 1, UNREADABLE, "", exc.strerror or str(exc))]) from None
    return load_text(data, str(path))
