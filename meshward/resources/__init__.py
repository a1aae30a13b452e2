"""Resource kinds (Kubernetes-style documents), validated with pydantic.

Importing this package registers every kind in :data:`KINDS`.
"""

from meshward.resources import (
    authentication,
    authorization,
    dataprotection,
    detection,
    egress,
    gateway,
    mesh,
    modelroute,
    ratelimit,
)
from meshward.resources.base import API_VERSION, KINDS, Metadata, Resource, Selector

__all__ = [
    "API_VERSION",
    "KINDS",
    "Metadata",
    "Resource",
    "Selector",
    "authentication",
    "authorization",
    "dataprotection",
    "detection",
    "egress",
    "gateway",
    "mesh",
    "modelroute",
    "ratelimit",
]
