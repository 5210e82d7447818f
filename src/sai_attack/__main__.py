"""``python -m sai_attack`` runs the command line (also under ``torchrun``)."""

import sys

from sai_attack.cli import main

sys.exit(main())
