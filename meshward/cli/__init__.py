"""The ``meshward`` command line. Each subcommand lives in ``meshward.cli.commands``."""
