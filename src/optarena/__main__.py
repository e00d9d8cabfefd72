"""``python -m optarena`` is the ``optarena`` command."""

import sys

from optarena.arena.cli import main

sys.exit(main())
