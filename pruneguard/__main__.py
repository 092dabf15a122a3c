"""``python -m pruneguard``: the same command as ``pruneguard``."""

import sys

from pruneguard.cli import main

sys.exit(main())
