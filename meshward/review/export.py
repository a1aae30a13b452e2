"""Sending a report's findings to the SIEM sinks of the mesh (``--export``).

Each finding becomes one OCSF Compliance Finding event (class 2003) in a hash chain of its
own (source ``meshward-review``, chain id derived from the report's signature or digest), and
is delivered with the very sink classes the control plane forwards the audit trail with
(:mod:`meshward.audit.sinks`: syslog, file, HTTP; OCSF or CEF as each sink is configured).
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any, Final

from meshward import __version__
from meshward.audit.chain import AuditRecord, ChainWriter, canonical_json
from meshward.audit.sinks import make_sink
from meshward.audit.store import ChainInfo
from meshward.resources.mesh import AuditSink
from meshward.review.signing import canonical_report

__all__ = ["EXPORT_SOURCE", "export_findings", "finding_events"]

EXPORT_SOURCE: Final = "meshward-review"
_SEVERITY_ID: Final = {"info": 1, "low": 2, "medium": 3, "high": 4, "critical": 5}


def finding_events(report: dict[str, Any], time_ms: int) -> list[dict[str, Any]]:
    """OCSF Compliance Finding events, one per finding of ``report``."""
    kind = str(report.get("kind", "report"))
    out = []
    for f in report.get("findings", []):
        out.append(
            {
                "class_uid": 2003,
                "class_name": "Compliance Finding",
                "category_uid": 2,
                "category_name": "Findings",
                "activity_id": 1,
                "activity_name": "Create",
                "type_uid": 200301,
                "time": time_ms,
                "severity_id": _SEVERITY_ID.get(str(f.get("severity")), 1),
                "severity": str(f.get("severity", "info")).capitalize(),
                "status_id": 1,
                "message": str(f.get("message", "")),
                "metadata": {
                    "version": "1.3.0",
                    "log_name": kind,
                    "product": {"name": "Meshward", "vendor_name": "Meshward", "version": __version__},
                },
                "finding_info": {
                    "title": str(f.get("check") or "finding"),
                    "uid": hashlib.sha256(canonical_json(f)).hexdigest()[:32],
                    "desc": str(f.get("message", "")),
                },
                "resources": [{"name": str(f.get("subject", "")), "type": "meshward"}],
                "compliance": {"control": str(f.get("resource", "")), "status": "Fail"},
            }
        )
    return out


def export_findings(report: dict[str, Any], sinks: list[AuditSink], time_ms: int) -> int:
    """Deliver the findings to every sink in ``sinks``; the number of records sent per sink.

    Raises the sink's error (OSError, ConnectionError, ...) when a delivery fails."""
    events = finding_events(report, time_ms)
    if not events or not sinks:
        return 0
    chain = hashlib.sha256(canonical_report(report)).hexdigest()[:16]
    info = ChainInfo(f"{EXPORT_SOURCE}.{chain}", EXPORT_SOURCE, chain)
    writer = ChainWriter()
    batch: list[tuple[ChainInfo, AuditRecord]] = [(info, writer.next(e)) for e in events]

    async def deliver() -> None:
        for config in sinks:
            sink = make_sink(config)
            try:
                await asyncio.wait_for(sink.send(batch), 30.0)
            finally:
                await sink.close()

    asyncio.run(deliver())
    return len(batch)
