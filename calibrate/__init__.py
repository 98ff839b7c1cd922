"""calibrate: how a chip is calibrated (docs/architecture.md).

- sessions, the functions a script, the CLI, the pytest plugin and a study over many chips call: ``session``
  (calibrate a chip), ``tracking`` (keep it calibrated through drift), ``diagnostics.session`` (diagnose it);
- ``controllers`` (the dual loop from its named parts, and the baselines), ``run`` (the loop that owns the
  ``Device``), ``history`` (every window), ``figures`` (one home for each figure), ``metrics`` (true figures);
- ``diagnostics`` (the balance diagnostics, one module per family), ``report`` (report.html), ``testing`` (the pytest
  plugin), ``backends`` (``--backend`` to a ``Device``);
- ``cli``: the ``eical`` command, the top layer.

A controller sees a chip only through ``hw_models.device.Device``.
"""
try:
    from importlib.metadata import version as _v

    __version__ = _v("eical")
except Exception:  # running from a source tree without an install
    __version__ = "0+unknown"
