"""Mesh identity: SPIFFE IDs, the certificate authority, join tokens and X.509-SVIDs."""
