"""A bad APP: importing this module calls sys.exit()."""

import sys

sys.exit(3)
