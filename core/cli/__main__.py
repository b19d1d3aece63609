"""``python -m polysteer.cli ...``: the same as the ``polysteer`` command."""

import sys

from polysteer.cli.main import main

sys.exit(main())
