"""Example models and clients for Meshward: small, readable, meant to be copied."""
