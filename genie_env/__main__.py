"""``python -m genie_env`` runs the ``genie-env`` command line."""

import sys

from genie_env.cli import main

sys.exit(main())
