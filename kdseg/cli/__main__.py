"""``python -m kdseg.cli``: the same as ``kdseg``."""

import sys

from kdseg.cli.app import main

sys.exit(main())
