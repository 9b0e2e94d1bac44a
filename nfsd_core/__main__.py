"""`python -m nfsd_core`: see nfsd_core.cli."""

import sys

from .cli import main

sys.exit(main())
