"""One module per subcommand (or family); each exposes ``register(subparsers)``.

``register`` adds a parser and sets ``func`` to a callable ``(args) -> int`` (the exit code).
"""
