"""``python -m pruneguard_demo``."""

import sys

from pruneguard_demo.story import main

sys.exit(main())
