"""A sidecar's profile, aggregated by phase of the request path: what one request costs, where.

Two sources, both pure (text or stats in, figures out):

- **Sampled** (:func:`sampled_phases`): py-spy's raw stacks with native frames. Each sample goes
  to the first frame, from the leaf up, that names a phase: a syscall, TLS (libssl, libcrypto,
  ``_ssl``, uvloop's SSL protocol), the HTTP parser (llhttp), else the Python module
  (:func:`phase_of`); frames that name none (the interpreter, uvloop's glue) pass to their
  caller. Samples of a waiting thread (the event loop in ``epoll_wait``, a thread in a lock or
  ``Event.wait``) are idle, a thread waiting for the GIL is counted apart: neither is CPU.
- **Deterministic** (:func:`profile_phases`): a cProfile dump. Each function's own time goes to
  the phase of its module; a C function (``~``) or a standard-library function that is not the
  event loop's goes to its callers', in proportion to the time each spent in it. What no Python
  frame accounts for is the process's CPU time minus the profile's total. cProfile slows every
  Python call, so it over-weights Python; its call counts per request are exact.
"""

from __future__ import annotations

import pstats
import re
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["OUTSIDE", "PHASES", "aggregate", "phase_of", "profile_phases", "sampled_phases"]

FuncKey = tuple[str, int, str]
OUTSIDE = "outside Python frames (uvloop, TLS records, syscalls)"
_CALLER = "(caller's phase)"

# (pattern on "file:function", phase) — the first that matches wins.
PHASES: tuple[tuple[str, str], ...] = (
    (r"_ssl\.|SSLObject|SSLSocket|/ssl\.py", "TLS (ssl module calls)"),
    (r"httptools|(^|/)meshward/http/", "HTTP parsing and heads (meshward.http, httptools)"),
    (
        r"(^|/)meshward/proxy/[^/]*downstream[^/]*\.py|(^|/)meshward/proxy/(listener|inbound|session|prepare)\.py",
        "downstream connection (read, dispatch)",
    ),
    (r"(^|/)meshward/proxy/[^/]*(upstream|pool)[^/]*\.py", "upstream connection (pool, write, read)"),
    (r"(^|/)meshward/proxy/[^/]*respon[^/]*\.py", "response relay"),
    (r"(^|/)meshward/proxy/[^/]*(stats|admin)[^/]*\.py", "proxy stats"),
    (r"(^|/)meshward/proxy/", "exchange (routing, head build, filter driving)"),
    (r"(^|/)meshward/filters/base\.py", "filter contract (RequestContext)"),
    (r"(^|/)meshward/(filters/)?authz|^<authz", "authz"),
    (r"(^|/)meshward/(filters/)?authn", "authn"),
    (r"(^|/)meshward/(filters/)?ratelimit", "ratelimit / token budget"),
    (r"(^|/)meshward/(filters/)?dlp|hyperscan", "DLP"),
    (r"(^|/)meshward/(filters/telemetry|telemetry|audit|metering)|prometheus_client", "telemetry and audit"),
    (r"(^|/)meshward/detection", "detection"),
    (r"(^|/)meshward/(gateway|egress|rollout|dashboard)", "other filters (gateway, egress, rollout, tap)"),
    (r"(^|/)meshward/ai/", "AI protocol and usage"),
    (r"(^|/)meshward/", "other meshward"),
    (r"(^|/)asyncio/|uvloop", "event loop (asyncio/uvloop calls)"),
    (r"^~:|/lib/python3[^/]*/", _CALLER),
)


def phase_of(func: FuncKey) -> str:
    """The phase of one profile entry, or ``"(caller's phase)"`` for builtins and the stdlib."""
    file, _line, name = func
    text = f"{file}:{name}"
    for pattern, phase in PHASES:
        if re.search(pattern, text):
            return phase
    return "other"


def aggregate(stats: Mapping[FuncKey, tuple[Any, ...]]) -> dict[str, float]:
    """Own time (s) per phase; time of caller-phase entries follows their callers (transitively)."""
    memo: dict[FuncKey, dict[str, float]] = {}

    def shares(func: FuncKey, depth: int = 0) -> dict[str, float]:
        """How ``func``'s own time splits over phases (fractions summing to 1)."""
        phase = phase_of(func)
        if phase != _CALLER:
            return {phase: 1.0}
        if func in memo:
            return memo[func]
        memo[func] = {"other": 1.0}  # a cycle or a deep chain ends here
        callers: Mapping[FuncKey, tuple[Any, ...]] = stats[func][4] if func in stats else {}
        weights = {c: float(v[2]) for c, v in callers.items()} if depth < 20 else {}
        total = sum(weights.values())
        if total <= 0:
            return memo[func]
        out: dict[str, float] = defaultdict(float)
        for caller, weight in weights.items():
            for ph, frac in shares(caller, depth + 1).items():
                out[ph] += frac * weight / total
        memo[func] = dict(out)
        return memo[func]

    result: dict[str, float] = defaultdict(float)
    for func, entry in stats.items():
        own = float(entry[2])
        for phase, frac in shares(func).items():
            result[phase] += own * frac
    return dict(result)


def _module(file: str) -> str:
    if file == "~":
        return "(C builtins)"
    m = re.search(r"/(meshward/.*|asyncio/.*|prometheus_client/.*)\.py$", file)
    return m.group(1).replace("/", ".") if m else Path(file).stem


def profile_phases(path: Path, requests: float, process_cpu: float | None = None) -> dict[str, Any]:
    """Per-phase µs per request (and share) from a cProfile dump that served ``requests``.

    ``process_cpu``: the process's CPU seconds over the same window; the part no Python frame
    accounts for becomes the ``OUTSIDE`` phase."""
    stats: Mapping[FuncKey, tuple[Any, ...]] = pstats.Stats(str(path)).stats  # type: ignore[attr-defined]
    by_phase = aggregate(stats)
    profiled = sum(by_phase.values())
    if process_cpu is not None and process_cpu > profiled:
        by_phase[OUTSIDE] = process_cpu - profiled
    total = sum(by_phase.values()) or 1.0
    per = max(requests, 1.0)
    phases = [
        {"phase": name, "us_per_request": round(sec / per * 1e6, 2), "share_pct": round(100 * sec / total, 1)}
        for name, sec in sorted(by_phase.items(), key=lambda kv: kv[1], reverse=True)
    ]
    modules: dict[str, float] = defaultdict(float)
    for (file, _line, _name), entry in stats.items():
        modules[_module(file)] += float(entry[2])
    top = sorted(modules.items(), key=lambda kv: kv[1], reverse=True)[:15]
    top_functions = sorted(stats.items(), key=lambda kv: float(kv[1][2]), reverse=True)[:15]
    return {
        "requests": int(requests),
        "us_per_request_total": round(total / per * 1e6, 1),
        "phases": phases,
        "modules": [
            {"module": m, "us_per_request": round(s / per * 1e6, 2), "share_pct": round(100 * s / total, 1)}
            for m, s in top
        ],
        "functions": [
            {
                "function": f"{name} ({Path(file).name}:{line})" if line else name,
                "calls_per_request": round(float(e[1]) / per, 2),
                "us_per_request": round(float(e[2]) / per * 1e6, 2),
            }
            for (file, line, name), e in top_functions
        ],
    }


# ---- sampled (py-spy raw stacks) ----------------------------------------------------------------

IDLE = "idle (not CPU)"
GIL_WAIT = "waiting for the GIL (not CPU)"
SYSCALL_WRITE = "syscalls: socket writes (loopback TCP: the receiver's kernel work too)"
SYSCALL_READ = "syscalls: socket reads"
SYSCALL_OTHER = "syscalls: other (epoll_ctl, getpid, ...)"
SYSCALLS = (SYSCALL_WRITE, SYSCALL_READ, SYSCALL_OTHER)
TLS = "TLS (libssl, libcrypto, uvloop SSL protocol)"
PARSER = "HTTP parsing and heads (meshward.http, httptools)"
_SYSCALL = re.compile(
    r"^(?P<call>write|writev|read|readv|send|sendmsg|sendto|recv|recvmsg|recvfrom|epoll_ctl|getpid|close|accept4?|fstat|stat|clock_gettime) \(libc"
)
_TLS = re.compile(r"\((libssl|libcrypto)[^)]*\)$|_ssl\.c|_ssl__|ssl\.py|SSLProtocol|sslproto|SSLObject")
_PARSER = re.compile(r"llhttp|\(parser\.c:|httptools")
_FRAME = re.compile(r"^(?P<name>.*) \((?P<where>[^()]*)\)$")


def _sample_phase(frames: list[str]) -> str:
    leaf = frames[-1]
    if leaf.startswith(("epoll_pwait ", "epoll_wait ")):
        return IDLE
    if any("PyThread_acquire_lock" in f for f in frames[-4:]) or any(
        re.search(r"^(Event|Condition)\.wait \(threading\.py", f) for f in frames
    ):
        return IDLE
    if any(f.startswith(("pthread_cond_wait", "pthread_cond_timedwait", "take_gil")) for f in frames[-4:]):
        return GIL_WAIT
    for frame in reversed(frames):
        call = _SYSCALL.search(frame)
        if call is not None:
            name = call.group("call")
            if name.startswith(("write", "send")):
                return SYSCALL_WRITE
            return SYSCALL_READ if name.startswith(("read", "recv")) else SYSCALL_OTHER
        if _TLS.search(frame):
            return TLS
        if _PARSER.search(frame):
            return PARSER
        m = _FRAME.match(frame)
        file = m.group("where").rsplit(":", 1)[0] if m else ""
        if m is None or not (file.endswith(".py") or file.startswith("<authz")):
            continue  # native glue (the interpreter, uvloop's loop.c, libc at an address): the caller's
        phase = phase_of((file, 0, m.group("name")))
        if phase not in (_CALLER, "other"):
            return phase
    return "interpreter and event loop (no phase named)"


def sampled_phases(raw: str, user_us: float | None = None, system_us: float | None = None) -> dict[str, Any]:
    """Per-phase shares of the CPU samples in py-spy's ``--format raw`` output (``a;b;c N``
    lines, root first). With the process's ``user_us`` and ``system_us`` CPU per request (from
    ``/proc``), each phase's µs per request: the syscall phases split ``system_us`` by their
    samples, the others ``user_us``. (A sample cannot tell CPU from waiting for one: on a busy
    machine a process preempted in a syscall still looks busy there, so the samples alone would
    over-weight syscalls; the kernel's own count of system time does not.)"""
    counts: dict[str, int] = defaultdict(int)
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        counts[_sample_phase(stack.split(";"))] += int(count)
    idle, gil = counts.pop(IDLE, 0), counts.pop(GIL_WAIT, 0)
    busy = sum(counts.values())
    in_kernel = sum(n for name, n in counts.items() if name in SYSCALLS)
    phases = []
    for name, n in sorted(counts.items(), key=lambda kv: kv[1], reverse=True):
        row: dict[str, Any] = {"phase": name, "samples": n, "share_pct": round(100 * n / max(busy, 1), 1)}
        if user_us is not None and system_us is not None:
            kernel = name in SYSCALLS
            pool, of = (system_us, in_kernel) if kernel else (user_us, busy - in_kernel)
            row["us_per_request"] = round(n / max(of, 1) * pool, 1)
        phases.append(row)
    phases.sort(key=lambda r: (-r.get("us_per_request", 0), -r["samples"]))
    return {"samples_cpu": busy, "samples_idle": idle, "samples_gil_wait": gil, "phases": phases}
