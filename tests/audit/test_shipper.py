"""The shipper against the real store, in process: resends, lost acks, a store that lost records."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from meshward.audit.shipper import AuditPost, AuditShipper
from meshward.audit.spool import AuditSpool
from meshward.audit.store import AuditRejected, AuditStore

SOURCE = "spiffe://demo.local/ns/ml/sa/fraud-model"


def _post_to(store: AuditStore) -> AuditPost:
    """What the control plane's handler does with a batch (minus HTTP)."""

    async def post(body: bytes) -> tuple[int, bytes]:
        try:
            return 200, json.dumps(store.ingest(SOURCE, body).to_json()).encode()
        except AuditRejected as exc:
            return exc.status, json.dumps(exc.to_json()).encode()

    return post


def _drain(shipper: AuditShipper) -> None:
    async def go() -> None:
        for _ in range(100):
            if not await shipper.ship_once():
                return
        raise AssertionError("shipping did not settle")

    asyncio.run(go())


def test_ships_in_batches_and_a_lost_ack_only_resends(tmp_path: Path) -> None:
    spool = AuditSpool(tmp_path / "spool")
    store = AuditStore(tmp_path / "control")
    for i in range(25):
        spool.append({"class_uid": 4002, "n": i})
    shipper = AuditShipper(spool, _post_to(store), batch_records=10)
    _drain(shipper)
    assert (spool.acked, shipper.stats.batches, shipper.stats.records) == (25, 3, 25)
    # The sidecar loses its "acked" file (say a crash before the rename): it resends; no duplicate.
    (tmp_path / "spool" / "acked").unlink()
    spool.close()
    spool = AuditSpool(tmp_path / "spool")
    for i in range(25, 30):
        spool.append({"class_uid": 4002, "n": i})
    _drain(AuditShipper(spool, _post_to(store), batch_records=10))
    assert spool.acked == 30
    (chain,) = store.chains()
    assert [r.event["n"] for r in store.read(chain.slug, 0)] == list(range(30))


def test_a_store_that_lost_acknowledged_records_is_reported_not_looped(tmp_path: Path) -> None:
    spool = AuditSpool(tmp_path / "spool", segment_bytes=1)  # one record per segment
    for i in range(5):
        spool.append({"class_uid": 4002, "n": i})
    _drain(AuditShipper(spool, _post_to(AuditStore(tmp_path / "control-a")), batch_records=2))
    assert spool.acked == 5 and spool.first_available == 5  # acknowledged segments deleted
    spool.append({"class_uid": 4002, "n": 5})
    restored = AuditStore(tmp_path / "control-b")  # an empty store: it expects seq 1
    shipper = AuditShipper(spool, _post_to(restored))
    with pytest.raises(RuntimeError, match="operator action needed"):
        asyncio.run(shipper.ship_once())
    batch = spool.read(0)
    assert batch is not None and (batch.first_seq, batch.last_seq) == (5, 6)  # what is really there
