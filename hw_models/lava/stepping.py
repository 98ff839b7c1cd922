"""The engine the Lava process model drives one model step per ``run_spk``.

``Engine`` itself offers the per-step interface (``begin_window``, ``step``/``advance``, ``end_window``) and its
``run(n)`` is those three calls, so the Lava backend and the numpy emulator execute one and the same loop.
``SteppedEngine`` adds nothing; it is its own class only so that what runs inside the Lava worker has a name of
its own (tests patch it there without touching the host's engine). This module does not import Lava.
"""
from hw_models.engine import Engine

__all__ = ["SteppedEngine"]


class SteppedEngine(Engine):
    """``Engine`` as the Lava process model uses it (no changes)."""
