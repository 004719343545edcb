"""``python -m spike.cli ...`` (e.g. under ``torchrun``): the ``spike`` command."""
import sys

from spike.cli import main

sys.exit(main())
