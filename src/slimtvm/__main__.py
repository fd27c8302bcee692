"""``python -m slimtvm`` is the ``slimtvm`` command."""

import sys

from .cli import main

sys.exit(main())
