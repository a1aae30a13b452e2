"""Meshward's benchmarks: one module per area, and a runner that writes ``BENCHMARKS.md``.

Each ``bench/<area>.py`` runs alone (``.venv/bin/python -m bench.<area>``, printing its results)
and exposes ``run() -> dict`` for the combined runner (``make bench`` = ``python -m bench``,
see :mod:`bench.__main__`). The runner calls each ``run()`` in a child process with a time
limit, stores the dict as JSON in ``bench/out/<area>.json`` and renders every stored result.

What a ``run()`` dict may hold (any JSON-serializable dict works; nested dicts are flattened to
``a.b.c`` rows). The report recognizes:

- ``results``: a list of ``{"name", "value", "unit", "target", "met"}`` rows, shown as a table;
- keys containing ``target`` (the goal) and boolean keys named ``met``, ``meets_*``,
  ``*_met`` or ``*_ok`` (whether it was reached): counted into the summary as met / not met;
- keys containing ``ratio``: listed again under "Ratios";
- ``command`` (the exact command if not ``python -m bench.<area>``) and ``notes`` (text).

Set ``MESHWARD_BENCH_QUICK=1`` (the runner's ``--quick``) to ask a module for a shorter run.
"""
