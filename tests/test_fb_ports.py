"""Ports: a port that is not there, or is not a serial port, is a usage error (``PortError``, exit 2) raised before
anything is sent; only a link that was up and then failed is ``LinkLost`` (exit 4). docs/protocol.md, "Ports"."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from calibrate.cli.exits import ExitCode, exit_code_for
from firmware_bridge import open_serial_device
from firmware_bridge.client import BoardClient
from firmware_bridge.errors import LinkLost, NoSuchPort, NotASerialPort, PortBusy, PortError, UsageError
from firmware_bridge.testing import REPO_ROOT, EmulatorProcess
from firmware_bridge.transport import SerialTransport, check_port


@pytest.fixture
def paths(tmp_path):
    reg = tmp_path / "table.json"
    reg.write_text("{}")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    return {"regular file": str(reg), "directory": str(tmp_path), "fifo": str(fifo), "dev null": "/dev/null",
            "missing": str(tmp_path / "ttyACM9"), "empty": "", "blank": "  ",
            "fault url, missing inner": f"eicalfault://{tmp_path / 'ttyUSB7'}?ber=0.01&seed=1",
            "fault url, file inner": f"eicalfault://{reg}?ber=0.01"}


EXPECTED = {"regular file": NotASerialPort, "directory": NotASerialPort, "fifo": NotASerialPort,
            "dev null": NotASerialPort, "missing": NoSuchPort, "empty": NoSuchPort, "blank": NoSuchPort,
            "fault url, missing inner": NoSuchPort, "fault url, file inner": NotASerialPort}


@pytest.mark.parametrize("what", sorted(EXPECTED))
def test_ports_that_are_not_serial_ports_are_usage_errors(paths, what):
    url = paths[what]
    with pytest.raises(EXPECTED[what]) as e:
        SerialTransport.open(url)
    assert isinstance(e.value, PortError) and isinstance(e.value, UsageError)
    assert exit_code_for(e.value) == ExitCode.USAGE and "\n" not in e.value.line()
    if url.strip():
        assert url.split("?")[0].replace("eicalfault://", "") in e.value.line()
    with pytest.raises(EXPECTED[what]):
        open_serial_device(url)  # the Device route (calibrate --backend serial:URL) says the same


def test_a_refused_socket_is_no_such_port():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    with pytest.raises(NoSuchPort, match="nothing accepts connections"):
        SerialTransport.open(f"socket://127.0.0.1:{port}")


def test_a_busy_port_is_a_port_error():
    master, slave = os.openpty()
    try:
        path = os.ttyname(slave)
        first = SerialTransport.open(path)
        try:
            with pytest.raises(PortBusy, match="busy"):
                SerialTransport.open(path)
        finally:
            first.close()
    finally:
        os.close(master)
        os.close(slave)


def test_check_port_accepts_urls_and_terminals():
    master, slave = os.openpty()
    try:
        check_port(os.ttyname(slave))
    finally:
        os.close(master)
        os.close(slave)
    for url in ("loop://", "socket://localhost:7000", "rfc2217://localhost:7000"):
        check_port(url)  # pyserial judges these at open


@pytest.mark.board
def test_a_link_that_drops_after_it_was_up_is_link_lost(tmp_path):
    with EmulatorProcess(["--test-chip", "16"], nvm=tmp_path / "b.nvm") as emu:
        c = BoardClient(SerialTransport.open(emu.path))
        assert c.hello().uid
        emu.kill()  # the cable is pulled
        with pytest.raises(LinkLost) as e:
            c.hello()
        assert exit_code_for(e.value) == ExitCode.LINK_LOST
        c.close()


@pytest.mark.parametrize("port, text", [("", "no port given"), ("/dev/null", "not a serial port"),
                                        ("/etc/hostname", "not a serial port"), ("/dev/ttyNOPE0", "no such port")])
def test_cli_info_exits_2_with_one_line(port, text):
    r = subprocess.run([sys.executable, "-m", "calibrate.cli", "info", "--port", port], capture_output=True,
                       text=True, timeout=60, cwd=REPO_ROOT)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and text in lines[0] and "Traceback" not in r.stderr


def test_calibrate_with_an_empty_serial_port_exits_2(capsys, tmp_path):
    from calibrate.cli import main

    rc = main(["calibrate", "--backend", "serial:", "--no-report", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "no port given" in err[0]
