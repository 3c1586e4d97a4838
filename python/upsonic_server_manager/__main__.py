"""``python -m upsonic_server_manager``: the same as ``upsonic-server``."""

import sys

from .cli import main

sys.exit(main())
