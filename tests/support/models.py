"""The example models (``examples.models.*``) as real processes for end-to-end tests.

    with example_model(tmp_path, "examples.models.chat", "--echo", "--test-hooks") as port:
        httpx.get(f"http://127.0.0.1:{port}/health")

The model listens on a free port; the block starts once its readiness path answers 200 and
stops the whole process group when it ends.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.support.proc import PYTHON, free_port, spawn, wait_for

__all__ = ["example_model"]


@contextlib.contextmanager
def example_model(log_dir: Path, module: str, *flags: str, ready: str = "/health") -> Iterator[int]:
    """Run ``python -m module --port PORT *flags`` (output in ``log_dir``); yield its port once ready."""
    port = free_port()
    name = module.rsplit(".", 1)[-1]
    proc = spawn([PYTHON, "-m", module, "--port", str(port), *flags], log_dir / f"{name}.log")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: httpx.get(base + ready, timeout=1).status_code == 200, timeout=30, what=name)
        yield port
    finally:
        proc.stop()
