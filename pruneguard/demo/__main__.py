"""``python -m pruneguard.demo``."""

import sys

from pruneguard.demo.story import main

sys.exit(main())
