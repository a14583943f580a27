import sys

from v2x.cli import main

sys.exit(main())
