"""AI awareness: which protocol a request speaks, its model and operation, and token usage."""
