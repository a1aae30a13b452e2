"""The demo's script: each step does one thing a user would, and compares what happened with
what Meshward promises.

Callers run as real processes with their own sidecar (``meshward run --as NS/NAME -- python -m
examples.clients.X``); refusals are checked from outside the mesh where possible (raw TCP,
``openssl s_client``, a forged server, ``meshward audit verify``). A step whose capability is not
built says so (SKIP) instead of pretending.
"""

from __future__ import annotations

import datetime as dt
import importlib
import importlib.util
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from meshward.demo.cluster import MeshCli, client_json, command_exists, wait_until
from meshward.demo.impostor import ForgedServer, caller_sidecar
from meshward.demo.probes import openssl_probe, plaintext_probe
from meshward.demo.report import Outcome, StepResult

__all__ = ["CARD", "PII_PROMPT", "Scenario", "chain_has", "is_night"]

TRUST_DOMAIN = "demo.local"
PII_EMAIL = "jane.doe@corp.example"
PII_PHONE = "+1 415 555 0100"
PII_PROMPT = f"Please update my contact: email {PII_EMAIL}, phone {PII_PHONE}."
CARD = "4111 1111 1111 1111"
CARD_DIGITS = CARD.replace(" ", "")
LONG_PROMPT = " ".join(["Summarize the quarterly fraud report for the board, in detail."] * 10)

Step = Callable[[], StepResult]


def is_night(now: dt.datetime) -> bool:
    """Inside the ops window of ``examples/demo/mesh.yaml``: 22:00-06:00 UTC."""
    minute = now.astimezone(dt.UTC).hour * 60 + now.astimezone(dt.UTC).minute
    return minute >= 22 * 60 or minute < 6 * 60


def _status_text(result: dict[str, Any]) -> str:
    status = result.get("status")
    return f"HTTP {status}" if status else f"no answer ({result.get('error', 'nothing printed')})"


def _clip(text: str, width: int = 70) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _last_line(text: str) -> str:
    """The last line of a command's error output: the message, or a traceback's exception."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return _clip(lines[-1], 100) if lines else "no message"


def _held(title: str, expected: str, observed: str, ok: bool) -> StepResult:
    return StepResult(title, expected, observed, Outcome.PASS if ok else Outcome.FAIL)


def _skip(title: str, expected: str, missing: str) -> StepResult:
    return StepResult(title, expected, f"not built yet: {missing}", Outcome.SKIP)


def chain_has(filter_module: str) -> bool:
    """Does the sidecar's inbound chain (:mod:`meshward.proxy.chain`) build this filter?

    The chain is one function with one line per filter; a filter not built yet is only a comment
    there (``# SLOT(dlp): ...``), so any use of ``filters.<name>`` outside a comment counts.
    """
    try:  # the source file: the module itself may be its mypyc build (no source to inspect)
        spec = importlib.util.find_spec("meshward.proxy.chain")
        source = Path(str(spec.origin if spec else "")).with_name("chain.py").read_text()
    except (ImportError, OSError):
        return False
    used = f"filters.{filter_module}"
    return any(used in line.split("#", 1)[0] for line in source.splitlines())


@dataclass
class Endpoint:
    service: str
    identity: str
    inbound: tuple[str, int] | None


def _address(text: str | None) -> tuple[str, int] | None:
    if not text:
        return None
    host, _, port = str(text).rpartition(":")
    return (host.strip("[]"), int(port)) if port.isdigit() else None


class Scenario:
    """The steps against a running demo mesh (``meshward up`` of the demo file)."""

    def __init__(self, cli: MeshCli, workdir: Path, status: dict[str, Any]) -> None:
        self.cli = cli
        self.workdir = workdir
        self.status = status

    # -- helpers -------------------------------------------------------------------------------
    def endpoint(self, service: str) -> Endpoint:
        for w in self.status.get("workloads", []):
            if w.get("service") == service:
                return Endpoint(service, str(w.get("identity", "")), _address(w.get("inbound")))
        return Endpoint(service, "", None)

    def call(
        self, identity: str, module: str, *args: str, timeout: float = 90.0
    ) -> tuple[dict[str, Any], str]:
        done = self.cli.run_as(identity, module, *args, timeout=timeout)
        result = client_json(done.stdout)
        if not result:
            err = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
            result = {"status": None, "error": _clip(err, 120)}
        return result, done.stderr

    def generation(self) -> int | None:
        control = self.cli.status().get("control") or {}
        gen = control.get("generation")
        return int(gen) if isinstance(gen, int) else None

    def steps(self) -> list[Step]:
        return [
            self.allowed_inference,
            self.intruder_denied,
            self.plaintext_refused,
            self.no_certificate_refused,
            self.forged_server_refused,
            self.pii_masked_in_prompt,
            self.card_masked_in_stream,
            self.ops_admin_window,
            self.token_budget,
            self.live_policy_change,
            self.rollout_canary,
            self.extraction_quarantined,
            self.audit_verifies,
        ]

    # -- steps ---------------------------------------------------------------------------------
    def allowed_inference(self) -> StepResult:
        title = "preprocessor scores 3 transactions on fraud-model (OIP v2)"
        result, _ = self.call("ml/preprocessor", "examples.clients.infer", "--rows", "3", "--fraud")
        preds = result.get("predictions")
        observed = f"{_status_text(result)}, predictions {preds}" if preds else _status_text(result)
        return _held(
            title, "HTTP 200 with predictions", observed, result.get("status") == 200 and bool(preds)
        )

    def intruder_denied(self) -> StepResult:
        title = "intruder calls fraud-model; the audit trail names it"
        expected = "HTTP 403; an audit record for lab/intruder"
        if not chain_has("authz"):
            return _skip(title, expected, "the authorization filter in the sidecar chain")
        result, _ = self.call("lab/intruder", "examples.clients.infer")
        if result.get("status") != 403:
            return _held(title, expected, _status_text(result), False)
        if not command_exists("audit"):
            return _skip(title, expected, "meshward audit")
        who = f"spiffe://{TRUST_DOMAIN}/ns/lab/sa/intruder"

        def audited() -> str | None:
            tail = self.cli.run("audit", "tail", "-n", "200", timeout=20)
            lines = [ln for ln in tail.stdout.splitlines() if who in ln and "403" in ln]
            return lines[-1] if lines else None

        line = wait_until(audited, timeout=10, interval=0.5)
        observed = (
            f"HTTP 403; audit: {_clip(line[line.find(who) :], 100)}"
            if line
            else "HTTP 403, but no audit record"
        )
        return _held(title, expected, observed, bool(line))

    def plaintext_refused(self) -> StepResult:
        title = "plain HTTP straight to fraud-model's sidecar (raw TCP)"
        ep = self.endpoint("fraud-model")
        if ep.inbound is None:
            return _held(title, "refused, no HTTP answer", "no inbound address in `meshward status`", False)
        probe = plaintext_probe(ep.inbound, "fraud-model.ml")
        return _held(title, "refused, no HTTP answer", probe.detail, not probe.answered)

    def no_certificate_refused(self) -> StepResult:
        title = "TLS without a client certificate (openssl s_client)"
        expected = "refused, no HTTP answer (the same probe with a mesh certificate is answered)"
        ep = self.endpoint("fraud-model")
        certs = self._certs("lab/probe", "probe")
        if ep.inbound is None or certs is None:
            return _held(
                title, expected, "no inbound address or no certificate from `meshward certs issue`", False
            )
        bundle = certs / "bundle.pem"
        control = openssl_probe(ep.inbound, "fraud-model.ml", bundle, (certs / "cert.pem", certs / "key.pem"))
        probe = openssl_probe(ep.inbound, "fraud-model.ml", bundle)
        observed = f"without: {probe.detail}; with lab/probe's certificate: {control.detail}"
        return _held(title, expected, observed, control.answered and not probe.answered)

    def forged_server_refused(self) -> StepResult:
        title = "a server with a valid certificate for lab/intruder poses as fraud-model"
        expected = "the caller's sidecar refuses it; the impostor gets no request"
        if not command_exists("proxy"):
            return _skip(title, expected, "meshward proxy")
        forged = self._certs("lab/intruder", "forged")
        caller = self._certs("ml/preprocessor", "caller")
        if forged is None or caller is None:
            return _held(title, expected, "could not issue certificates (`meshward certs issue`)", False)
        with (
            ForgedServer(forged / "cert.pem", forged / "key.pem") as impostor,
            caller_sidecar(caller, impostor.port, self.workdir / "forged") as proxy,
        ):
            if proxy is None:
                return _held(title, expected, "the caller's sidecar did not start", False)
            try:
                resp = httpx.post(
                    "http://fraud-model.ml/v2/models/fraud/infer",
                    json={"inputs": []},
                    proxy=proxy,
                    timeout=15,
                )
                answer = f"HTTP {resp.status_code}"
                ok_status = resp.status_code in (502, 503)
            except httpx.HTTPError as exc:
                answer, ok_status = f"{type(exc).__name__}", True
        observed = (
            f"{answer}; impostor: {impostor.handshakes} handshake(s), {impostor.request_bytes} request bytes"
        )
        return _held(title, expected, observed, ok_status and impostor.request_bytes == 0)

    def pii_masked_in_prompt(self) -> StepResult:
        title = "webapp sends a prompt with an email and a phone number to chat"
        expected = "the model sees them masked"
        if not chain_has("dlp"):
            return _skip(title, expected, "the DLP filter in the sidecar chain")
        result, _ = self.call("web/webapp", "examples.clients.chat", PII_PROMPT)
        content = str(result.get("content", ""))
        if result.get("status") != 200:
            return _held(title, expected, _status_text(result), False)
        leaked = PII_EMAIL in content or "555 0100" in content
        return _held(title, expected, f"the model saw: {_clip(content, 90)}", not leaked)

    def card_masked_in_stream(self) -> StepResult:
        title = "chat streams an answer containing a card number"
        expected = "the card number is masked in the stream"
        if not chain_has("dlp"):
            return _skip(title, expected, "the DLP filter in the sidecar chain")
        result, _ = self.call(
            "web/webapp",
            "examples.clients.chat",
            "--stream",
            "--header",
            f"X-Test-Append: {CARD}",
            "What card is on file?",
        )
        content = str(result.get("content", ""))
        if result.get("status") != 200:
            return _held(title, expected, _status_text(result), False)
        leaked = CARD in content or CARD_DIGITS in content.replace(" ", "")
        observed = f"{result.get('chunks', '?')} chunks: {_clip(content, 80)}"
        return _held(title, expected, observed, not leaked)

    def ops_admin_window(self) -> StepResult:
        now = dt.datetime.now(dt.UTC)
        night = is_night(now)
        title = f"ops lists the model repository at {now:%H:%M} UTC (admin allowed 22:00-06:00)"
        expected = "HTTP 200 (night)" if night else "HTTP 403 (daytime)"
        if not chain_has("authz"):
            return _skip(title, expected, "the authorization filter in the sidecar chain")
        result, _ = self.call("ops/ops", "examples.clients.admin", "index")
        if is_night(dt.datetime.now(dt.UTC)) != night:  # the window opened or closed meanwhile
            return self.ops_admin_window()
        return _held(title, expected, _status_text(result), result.get("status") == (200 if night else 403))

    def token_budget(self) -> StepResult:
        title = "webapp keeps chatting: 600 tokens per hour"
        expected = "HTTP 429 once the budget is spent"
        if not chain_has("ratelimit"):
            return _skip(title, expected, "the rate-limit filter in the sidecar chain")
        done = self.cli.run_as(
            "web/webapp", "examples.clients.chat", "--repeat", "25", LONG_PROMPT, timeout=120
        )
        answers = [json.loads(ln) for ln in done.stdout.splitlines() if ln.startswith("{")]
        ok_count = sum(1 for a in answers if a.get("status") == 200)
        last = answers[-1] if answers else {"status": None, "error": _clip(done.stderr, 100)}
        spent = sum((a.get("usage") or {}).get("total_tokens", 0) for a in answers)
        observed = f"{ok_count} answered ({spent} tokens), then {_status_text(last)}"
        return _held(title, expected, observed, last.get("status") == 429)

    def in_force(self, service: str, generation: int, since: float, timeout: float = 30.0) -> float | None:
        """Seconds from ``since`` until ``service``'s sidecar acknowledged ``generation``."""

        def acked() -> bool:
            for w in self.cli.status().get("workloads", []):
                config = w.get("config") or {}
                if w.get("service") == service and config.get("status") == "ACK":
                    return int(config.get("generation") or 0) >= generation
            return False

        return time.monotonic() - since if wait_until(acked, timeout, interval=0.05) else None

    def live_policy_change(self) -> StepResult:
        title = "apply a DENY policy for preprocessor while the mesh runs, then roll it back"
        expected = "403 once in force, 200 after rollback"
        if not chain_has("authz"):
            return _skip(title, expected, "the authorization filter in the sidecar chain")
        before = self.generation()
        if before is None:
            return _held(title, expected, "no current generation in `meshward status`", False)
        policy = self.workdir / "deny-preprocessor.yaml"
        policy.write_text(DENY_PREPROCESSOR)
        applied = self.cli.run("apply", "-f", str(policy))
        if applied.returncode != 0:
            return _held(title, expected, f"apply failed: {_last_line(applied.stderr)}", False)
        took = self.in_force("fraud-model", before + 1, time.monotonic())
        denied, _ = self.call("ml/preprocessor", "examples.clients.infer")
        rolled = self.cli.run("rollback", str(before))
        if rolled.returncode != 0:
            return _held(title, expected, f"rollback failed: {_last_line(rolled.stderr)}", False)
        after = self.generation() or before + 2
        self.in_force("fraud-model", after, time.monotonic())
        allowed, _ = self.call("ml/preprocessor", "examples.clients.infer")
        in_force = (
            f"acknowledged by fraud-model's sidecar {took:.1f} s after `meshward apply` returned"
            if took is not None
            else "not acknowledged within 30 s"
        )
        observed = (
            f"generation {before + 1} {in_force}: {_status_text(denied)}; "
            f"rollback (generation {after}): {_status_text(allowed)}"
        )
        return _held(title, expected, observed, denied.get("status") == 403 and allowed.get("status") == 200)

    def rollout_canary(self) -> StepResult:
        from meshward.demo.rollout import rollout_canary

        return rollout_canary(self)

    def extraction_quarantined(self) -> StepResult:
        title = "threat detection: preprocessor runs a model-extraction attack on fraud-model"
        expected = "a PRADA alert, the caller quarantined (403) within 200 queries, then released"
        if not command_exists("alerts"):
            return _skip(title, expected, "meshward alerts")
        before = self.generation() or 0
        policy = self.workdir / "guard-fraud.yaml"
        policy.write_text(GUARD_FRAUD)
        applied = self.cli.run("apply", "-f", str(policy))
        if applied.returncode != 0:
            return _held(title, expected, f"apply failed: {_last_line(applied.stderr)}", False)
        self.in_force("fraud-model", before + 1, time.monotonic())
        attack, _ = self.call("ml/preprocessor", "examples.clients.extract", "--max", "400")
        who = f"spiffe://{TRUST_DOMAIN}/ns/ml/sa/preprocessor"

        def alert() -> dict[str, Any] | None:
            done = self.cli.run("alerts", "list", "--json", timeout=20)
            found = [a for a in json.loads(done.stdout or "[]") if a["detector"] == "extraction"]
            return next((a for a in found if a["subject"] == who), None)

        found = wait_until(alert, timeout=15, interval=0.5)
        if not found:
            return _held(title, expected, f"{_status_text(attack)}; no extraction alert", False)
        listed = self.cli.run("quarantine", "list", "--json", timeout=20)
        quarantines = [q for q in json.loads(listed.stdout or "[]") if q["alert"] == found["id"]]
        released = self.cli.run("quarantine", "release", quarantines[0]["id"]) if quarantines else None
        observed = (
            f"alert {found['id']} (W={found['evidence'].get('w')}) after {attack.get('answered')} answered "
            f"queries; then {_status_text(attack)}; "
            + (
                f"quarantine {quarantines[0]['id']} released"
                if released and released.returncode == 0
                else "no quarantine"
            )
        )
        ok = (
            attack.get("refused") is True
            and int(attack.get("answered") or 10**6) <= 200
            and released is not None
            and released.returncode == 0
        )
        return _held(title, expected, observed, ok)

    def audit_verifies(self) -> StepResult:
        title = "meshward audit verify: the hash chains and signed checkpoints"
        expected = "exit 0, no tampering"
        if not command_exists("audit"):
            return _skip(title, expected, "meshward audit")
        done = self.cli.run("audit", "verify", timeout=60)
        last = (done.stdout.strip().splitlines() or done.stderr.strip().splitlines() or ["nothing printed"])[
            -1
        ]
        return _held(title, expected, f"exit {done.returncode}: {_clip(last, 90)}", done.returncode == 0)

    # -- certificates and a stand-alone sidecar for the forged-server step ---------------------
    def _certs(self, identity: str, name: str) -> Path | None:
        out = self.workdir / "certs" / name
        done = self.cli.run("certs", "issue", "--id", identity, "--out", str(out), "--ttl", "1h")
        return out if done.returncode == 0 and (out / "cert.pem").exists() else None


GUARD_FRAUD = """\
apiVersion: meshward.dev/v1alpha1
kind: DetectionPolicy
metadata: {name: guard-fraud, namespace: ml}
spec:
  selector: {matchLabels: {app: fraud-model}}
  detectors:
  - {type: extraction, threshold: 0.90, minQueries: 50}
  - {type: violations, maxDenialsPerMinute: 20}
  response: {quarantine: {duration: 10m}, mode: enforce}
"""

DENY_PREPROCESSOR = """\
apiVersion: meshward.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: incident-block-preprocessor, namespace: ml}
spec:
  selector: {matchLabels: {app: fraud-model}}
  action: DENY
  rules:
  - from: [{source: {principals: ["demo.local/ns/ml/sa/preprocessor"]}}]
"""
