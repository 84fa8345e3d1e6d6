"""``python -m bayesgen.cli``."""

import sys

from bayesgen.cli import main

sys.exit(main())
