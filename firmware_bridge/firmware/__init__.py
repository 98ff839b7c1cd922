"""Board firmware: the code that runs on the board, unchanged under MicroPython.

Modules: ``wire`` (COBS, CRC-32, frames, stream decoder), ``messages`` (payload layouts), ``nvm`` (A/B banks,
header, boot log), ``board`` (the protocol state machine; ``states`` names its states, ``board_tracker`` holds its
tracker handlers), ``tracker`` (the on-board tracker; ``trend`` its drift line, ``tracker_codes`` its codes and
STATUS), ``testchip`` (the MicroPython test chip) and ``mp_main`` (the stdin/stdout loop). Everything but ``mp_main`` is sans-IO. The host imports ``wire``,
``messages`` and ``nvm`` too, so both ends share one implementation of the format.
"""
