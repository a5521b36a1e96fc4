"""``python -m devkit.sandbox``."""

import sys

from devkit.sandbox.cli import main

sys.exit(main())
