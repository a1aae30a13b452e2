"""Fuzz target: the YAML resource loader (every kind); the property checked: any input either
loads or raises LoadError (with a file, line and field) — never another exception; a loaded
resource set dumps to documents that load again to the same resources."""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["meshward"]):
    import yaml

    from meshward.resources.loader import LoadError, load_text


def TestOneInput(data: bytes) -> None:
    try:
        resources = load_text(data, "fuzz.yaml")
    except LoadError as exc:
        if not exc.problems:
            raise AssertionError("LoadError without a problem") from None
        return
    text = yaml.safe_dump_all([r.to_doc() for r in resources], sort_keys=True)
    again = load_text(text, "again.yaml")
    if [r.to_doc() for r in again] != [r.to_doc() for r in resources]:
        raise AssertionError("resources do not survive a dump and a reload")


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
