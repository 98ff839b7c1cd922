"""pyserial handler for ``eicalfault://<inner-url>?ber=<rate>&seed=<n>&faults=<kinds>``: a port that damages bytes.

Everything between ``eicalfault://`` and the last ``?`` is the inner port's URL (``eicalfault:///dev/pts/5?...``
wraps ``/dev/pts/5``); the query holds ``ber`` (byte error rate, default 0), ``seed`` (default 0) and ``faults``
(which kinds: ``bytes`` = drop, flip, insert (the default); ``frames`` = truncate, duplicate, garbage between
frames; ``all``; or a comma-separated list). Writes are damaged on the way out, reads on the way in, each
direction with its own seeded ``FaultInjector`` (docs/protocol.md, "The link under noise").
"""
from __future__ import annotations

import serial
from serial.serialutil import PortNotOpenError, SerialBase, SerialException

from firmware_bridge.transport import FaultInjector, parse_fault_url

class Serial(SerialBase):
    """A port wrapping another one and damaging the bytes through it (see the module docstring)."""

    def __init__(self, *args, **kwargs):
        self._inner = None
        self._tx = None
        self._rx = None
        super().__init__(*args, **kwargs)

    def open(self):
        if self.is_open:
            raise SerialException("Port is already open.")
        if self._port is None:
            raise SerialException("Port must be configured before it can be used.")
        inner, ber, seed, kinds = parse_fault_url(self._port)
        ser = serial.serial_for_url(inner, do_not_open=True, baudrate=self._baudrate, timeout=self._timeout,
                                    write_timeout=self._write_timeout, exclusive=self._exclusive)
        ser.dtr = self._dtr_state
        ser.rts = self._rts_state
        ser.open()
        self._inner = ser
        self._tx = FaultInjector(ber, 2 * seed, kinds)
        self._rx = FaultInjector(ber, 2 * seed + 1, kinds)
        self.is_open = True

    def close(self):
        if self._inner is not None:
            self._inner.close()
            self._inner = None
        self.is_open = False

    def _reconfigure_port(self, force_update=False):
        if self._inner is not None:
            self._inner.timeout = self._timeout
            self._inner.write_timeout = self._write_timeout

    def _check(self):
        if not self.is_open or self._inner is None:
            raise PortNotOpenError()
        return self._inner

    @property
    def in_waiting(self):
        return self._check().in_waiting

    def fileno(self):
        return self._check().fileno()

    def read(self, size=1):
        return self._rx.apply(self._check().read(size))

    def write(self, data):
        inner = self._check()
        data = bytes(data)
        inner.write(self._tx.apply(data))
        return len(data)

    def flush(self):
        self._check().flush()

    def reset_input_buffer(self):
        self._check().reset_input_buffer()

    def reset_output_buffer(self):
        self._check().reset_output_buffer()

    def _update_dtr_state(self):
        if self._inner is not None:
            self._inner.dtr = self._dtr_state

    def _update_rts_state(self):
        if self._inner is not None:
            self._inner.rts = self._rts_state

    def _update_break_state(self):
        pass

    @property
    def cts(self):
        return self._check().cts

    @property
    def dsr(self):
        return self._check().dsr

    @property
    def ri(self):
        return self._check().ri

    @property
    def cd(self):
        return self._check().cd
