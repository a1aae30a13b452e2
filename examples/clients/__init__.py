"""Example mesh clients: plain HTTP callers that get mTLS from their sidecar."""
