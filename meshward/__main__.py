"""``python -m meshward`` is the ``meshward`` command."""

import sys

from meshward.cli.main import main

sys.exit(main())
