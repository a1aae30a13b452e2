"""Metering: token usage and spend per identity and model (``meshward usage``)."""
