"""pyserial URL handlers of eical, registered in ``serial.protocol_handler_packages`` by ``firmware_bridge``.

``eicalfault://<inner-url>?ber=<rate>&seed=<n>[&faults=bytes|frames|all]``: the port ``<inner-url>`` damaged at
random (seeded) in both directions at byte error rate ``ber``: bytes dropped, flipped and inserted, writes
truncated and duplicated, garbage between frames; for testing the link layer.
"""
