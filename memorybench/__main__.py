"""``python -m memorybench`` (also what ``torchrun -m memorybench`` runs)."""

import sys

from .cli import main

sys.exit(main())
