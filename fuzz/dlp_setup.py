"""What the DLP fuzz targets share: one masking policy for e-mail addresses and card numbers."""

from __future__ import annotations

from meshward.dlp.policy import compile_plans
from meshward.dlp.redact import Redactor
from meshward.resources.dataprotection import DataProtectionPolicy

__all__ = ["PLANS", "REDACTOR"]

PLANS = compile_plans(
    [
        DataProtectionPolicy.model_validate(
            {
                "apiVersion": "meshward.dev/v1alpha1",
                "kind": "DataProtectionPolicy",
                "metadata": {"name": "pii", "namespace": "fuzz"},
                "spec": {"action": "mask", "detectors": ["email", "credit_card"]},
            }
        )
    ]
)
REDACTOR = Redactor(b"k" * 32)
