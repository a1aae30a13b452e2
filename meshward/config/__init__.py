"""Configuration: the SQLite store of generations and the snapshot each sidecar enforces."""
