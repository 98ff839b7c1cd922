# The board's protocol states (board.py; docs/protocol.md section 5).
IDLE = 0  # no flash session
OPEN = 1  # FLASH_BEGIN done: data may be written
VERIFIED = 2  # the written payload's CRC and format checked out: FLASH_COMMIT allowed
TRACKING = 3  # the on-board tracker runs (board_tracker.py)
STATE_NAMES = {IDLE: "IDLE", OPEN: "OPEN", VERIFIED: "VERIFIED", TRACKING: "TRACKING"}
