"""``python -m devkit.soak``."""

import sys

from devkit.soak.cli import main

sys.exit(main())
