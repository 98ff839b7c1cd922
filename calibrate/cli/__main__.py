"""``python -m calibrate.cli``: the ``eical`` command."""
import sys

from . import main

sys.exit(main())
