"""The tamper-evident audit trail: OCSF events, hash chains, the spool, the store, the sinks.

Flow: a sidecar turns each security-relevant event into an OCSF record (:mod:`.ocsf`), appends
it to its crash-safe, hash-chained spool (:mod:`.spool`, :mod:`.chain`) and a shipper
(:mod:`.shipper`) posts batches over mTLS to the control plane, whose store (:mod:`.store`)
checks each chain's continuity, keeps it and signs checkpoints (:mod:`.checkpoint`).
``meshward audit verify`` (:mod:`.verify`) names any edited, removed, reordered or inserted
record; :mod:`.formats` renders OCSF, CEF and RFC 5424 syslog; :mod:`.sinks` forwards to SIEMs;
:mod:`.control` is what the control plane holds (store + its own events + sinks).
"""

from meshward.audit.chain import GENESIS, AuditRecord, ChainWriter
from meshward.audit.shipper import AuditShipper
from meshward.audit.spool import AuditSpool
from meshward.audit.store import AuditRejected, AuditStore, IngestAck
from meshward.audit.verify import VerifyReport, verify_audit_dir

__all__ = [
    "GENESIS",
    "AuditRecord",
    "AuditRejected",
    "AuditShipper",
    "AuditSpool",
    "AuditStore",
    "ChainWriter",
    "IngestAck",
    "VerifyReport",
    "verify_audit_dir",
]
