"""Example model servers: an OpenAI-compatible chat model and an OIP v2 fraud classifier."""
