"""AI protocol classification."""
