"""``python -m jobs``: the same as the ``ecom-pipeline`` command."""

import sys

from jobs.cli import main

sys.exit(main())
