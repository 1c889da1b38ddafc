"""``python -m service serve|translate`` (see service/cli.py)."""

import sys

from service.cli import main

sys.exit(main())
