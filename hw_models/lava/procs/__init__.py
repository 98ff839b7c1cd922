"""Lava Process and ProcessModel of an emulated chip. Keep this package to the one module ``chip_process``.

When Lava compiles a Process it looks for ProcessModels by executing *every* module in the Process's folder, each
time, under a bare module name (lava-nc issue #149), and relative imports break that search (#902). So this folder
holds nothing but ``chip_process.py``, which uses absolute imports only and has no side effects at import time.
"""
