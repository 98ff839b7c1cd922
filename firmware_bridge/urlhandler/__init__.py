"""pyserial URL handlers of eical, registered in ``serial.protocol_handler_packages`` by ``firmware_bridge``.

``eicalfault://<inner-url>?ber=<rate>&seed=<n>``: the port ``<inner-url>`` with bytes dropped, flipped and
inserted at random (seeded) in both directions, at byte error rate ``ber``; for testing the link layer.
"""
