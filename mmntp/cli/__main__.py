"""`python3 -m mmntp.cli ...`: the `mmntp` command."""

import sys

from mmntp.cli import main

sys.exit(main())
