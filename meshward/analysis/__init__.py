"""Static analysis of a resource set (``meshward analyze``, warnings at ``apply``): istioctl
analyze's role. Pure code: resources in, findings out (see :mod:`meshward.analysis.rules`)."""

from meshward.analysis.findings import Finding, exit_code
from meshward.analysis.rules import analyze

__all__ = ["Finding", "analyze", "exit_code"]
