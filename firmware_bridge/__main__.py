"""``python -m firmware_bridge``: the bridge's subcommands without the rest of eical (flash, devices, info,
board-emulator)."""
import sys

from .cli import main

sys.exit(main())
