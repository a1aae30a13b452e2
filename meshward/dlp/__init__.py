"""Data-loss prevention: find sensitive values in prompts and outputs, and stop or rewrite them.

- ``detectors``  the catalogue: candidate patterns per detector family, user regexes and terms.
- ``validators`` confirmation of candidates (check digits, IIN ranges, formats, structure).
- ``scanner``    one Hyperscan database for every pattern (or pure ``re``, same results).
- ``policy``     ``DataProtectionPolicy`` resources compiled into a plan per direction.
- ``redact``     the actions (mask, redact, hash, log, block) applied to a byte string.
- ``body``       whole bodies: JSON-aware rewriting, text, uninspectable bodies, record counts.
- ``stream``     streamed responses (chunked text, SSE) with a small carry-over window.

The sidecar filter that drives them is ``meshward.filters.dlp``. Everything here is pure (bytes
in, bytes and counts out), so it is tested with tables and benchmarked alone (``bench.dlp``).
"""

from meshward.dlp.policy import DlpPlan, compile_plans
from meshward.dlp.redact import Outcome, Redactor
from meshward.dlp.scanner import Finding, Scanner

__all__ = ["DlpPlan", "Finding", "Outcome", "Redactor", "Scanner", "compile_plans"]
