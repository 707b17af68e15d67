import sys

from arkq.cli import main

sys.exit(main())
