"""``python -m chainzoom.cli``: the same as the ``chainzoom`` command."""

import sys

from chainzoom.cli import main

sys.exit(main())
