"""Resource kinds (Kubernetes-style documents), validated with pydantic.

Importing this package registers every kind in :data:`KINDS`.
"""

from meshward.resources import authorization, dataprotection, detection, mesh, ratelimit
from meshward.resources.base import API_VERSION, KINDS, Metadata, Resource, Selector

__all__ = [
    "API_VERSION",
    "KINDS",
    "Metadata",
    "Resource",
    "Selector",
    "authorization",
    "dataprotection",
    "detection",
    "mesh",
    "ratelimit",
]
