"""`python -m mupcheck ...` is the `mupcheck` command."""

import sys

from mupcheck.outputs.cli import main

sys.exit(main())
