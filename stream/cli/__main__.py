"""`python -m stream.cli ARGS...`: the `fakeweb` command."""

import sys

from stream.cli import main

sys.exit(main())
