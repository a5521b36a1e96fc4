"""``python -m devkit.bench``."""

import sys

from devkit.bench.cli import main

sys.exit(main())
