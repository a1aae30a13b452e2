"""When a certificate is renewed: at half-life, as the SPIFFE and Istio agents do.

One rule for every certificate Meshward holds (sidecar SVIDs, the control plane's own SVID, the
operator's certificate): renew once half of its validity has passed, so a control plane that is
away for up to half a lifetime costs no outage.
"""

from __future__ import annotations

import datetime as dt

__all__ = ["renew_at", "renewal_due"]


def renew_at(not_before: dt.datetime, not_after: dt.datetime) -> dt.datetime:
    """The instant half of ``[not_before, not_after]`` has passed."""
    return not_before + (not_after - not_before) / 2


def renewal_due(not_before: dt.datetime, not_after: dt.datetime, now: dt.datetime | None = None) -> bool:
    """True once ``now`` (default: the current UTC time) has reached the half-life."""
    return (now or dt.datetime.now(dt.UTC)) >= renew_at(not_before, not_after)
