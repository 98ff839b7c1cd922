"""The Lava emulation backend (``--backend lava``): the chip as a Lava process, bit-identical to numpy.

Importing this package does not import Lava: ``LavaDevice`` and friends load ``hw_models.lava.device`` on first
access, and that module imports Lava only when the first device starts (Lava forces the ``fork`` start method
and starts workers, which nothing should pay for unless it asked for Lava). Layout:

- ``device``: ``LavaDevice`` (a ``NumpyDevice`` whose engine runs in Lava), session lifecycle, exit hook;
- ``stepping``: ``SteppedEngine``, the shared engine advanced one step per call;
- ``protocol``: the host <-> model pipe messages;
- ``procs/chip_process``: the Lava Process and ProcessModel (alone in its folder; see ``procs/__init__``).

See docs/lava.md.
"""
__all__ = ["LavaDevice", "LavaEngine", "LavaModelError", "LavaUnavailable", "close_all", "open_sessions"]


def __getattr__(name):
    if name in __all__:
        from hw_models.lava import device

        return getattr(device, name)
    raise AttributeError(f"module 'hw_models.lava' has no attribute {name!r}")
