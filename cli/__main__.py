"""`python -m cli`: the same as the `arkq` command."""

import sys

from cli.main import main

sys.exit(main())
