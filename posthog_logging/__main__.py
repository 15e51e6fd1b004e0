"""``python -m posthog_logging``: see :mod:`posthog_logging.cli`."""

import sys

from .cli import main

sys.exit(main())
