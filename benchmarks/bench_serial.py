"""The serial bridge over a real pty: HELLO round trip, MEASURE, flash throughput, and flashing over a noisy link.

``run()`` returns one row per measurement; ``main()`` prints them as a table. Every board here is the board
emulator in a separate process (``eical board-emulator``) behind a pseudo-terminal, as a
board behind USB would be; ptys ignore the baud rate, so these are the software's own costs (the wire time at a
real baud rate comes on top: 64 KiB take about 5.8 s at 115200 baud, 0.73 s at 921600).

- HELLO round trip: median and 99th percentile of 500 (devboard emulator, numpy chip).
- MEASURE of one 100 ms window of the 32-neuron devboard (mostly the numpy chip's simulation).
- Flash of a 64 KiB table (the test chip with 32768 neurons, two 8-bit knobs): the FLASH_DATA phase alone,
  and the whole ``flash_table`` (HELLO, diff read, erase, data, verify, commit, read-back).
- The same firmware under MicroPython: HELLO round trip and a 4 KiB flash.
- An 8 KiB flash through ``eicalfault://`` at byte error rates 1e-4, 1e-3 and 1e-2 (3 seeds each).
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

from firmware_bridge.client import BoardClient
from firmware_bridge.emulator import find_micropython
from firmware_bridge.errors import LinkLost
from firmware_bridge.firmware.testchip import TestChip
from firmware_bridge.flash import TableImage, flash_table
from firmware_bridge.testing import EmulatorProcess
from firmware_bridge.transport import SerialTransport

N_64K = 32768  # 2 knobs x 32768 8-bit codes = 64 KiB (+ 30 B of table header)
N_8K = 4096


def _image(n: int, uid: str, value: int) -> TableImage:
    sha = TestChip(n, uid).info()["profile_sha256"]
    return TableImage.from_codes(uid, sha, {"gain_e": [(value + i) % 256 for i in range(n)],
                                            "gain_i": [(value * 3 + i // 7) % 256 for i in range(n)]})


def _hello_rtt(c: BoardClient, n: int) -> List[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        c.hello()
        out.append(time.perf_counter() - t)
    return out


def _rtt_rows(where: str, samples: List[float]) -> List[Dict[str, Any]]:
    s = sorted(samples)
    return [{"bench": f"HELLO round trip ({where})", "value": statistics.median(s) * 1e6, "unit": "us median",
             "detail": f"p99 {s[int(0.99 * (len(s) - 1))] * 1e6:.0f} us, n={len(s)}"}]


def _flash_rows(where: str, c: BoardClient, img: TableImage) -> List[Dict[str, Any]]:
    flash_table(c, img)  # warm-up and a known old table
    best = None
    for k in range(3):
        rep = flash_table(c, _image(len(img.knobs["gain_e"].codes), img.chip_uid, 100 + k))
        if best is None or rep.write_seconds < best.write_seconds:
            best = rep
    kib = best.table_bytes / 1024
    return [
        {"bench": f"flash {kib:.0f} KiB, FLASH_DATA phase ({where})", "value": kib / best.write_seconds,
         "unit": "KiB/s", "detail": f"{best.write_seconds * 1e3:.1f} ms, chunk {best.final_chunk} B, best of 3"},
        {"bench": f"flash {kib:.0f} KiB, whole flash_table ({where})", "value": kib / best.seconds, "unit": "KiB/s",
         "detail": f"{best.seconds * 1e3:.1f} ms incl. HELLO, diff read, verify, commit, read-back"},
    ]


def run() -> List[Dict[str, Any]]:
    rows: List[Dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        with EmulatorProcess(["--profile", "devboard", "--seed", "1"], nvm=tmp / "dev.nvm") as emu:
            c = BoardClient(SerialTransport.open(emu.path))
            _hello_rtt(c, 50)
            rows += _rtt_rows("pty, CPython emulator", _hello_rtt(c, 500))
            c.measure(100.0)
            ts = []
            for _ in range(10):
                t = time.perf_counter()
                c.measure(100.0)
                ts.append(time.perf_counter() - t)
            rows.append({"bench": "MEASURE 100 ms window, devboard 32 neurons (pty)",
                         "value": statistics.median(ts) * 1e3, "unit": "ms median", "detail": "n=10"})
            c.close()
        with EmulatorProcess(["--test-chip", str(N_64K), "--uid", "bench-64k"], nvm=tmp / "big.nvm") as emu:
            c = BoardClient(SerialTransport.open(emu.path))
            rows += _flash_rows("pty, CPython emulator", c, _image(N_64K, "bench-64k", 1))
            c.close()
        mp = find_micropython()
        if mp is not None:
            with EmulatorProcess(["--micropython", "--test-chip", "2048", "--uid", "bench-mp"]) as emu:
                c = BoardClient(SerialTransport.open(emu.path))
                _hello_rtt(c, 20)
                rows += _rtt_rows("pty, MicroPython unix port", _hello_rtt(c, 200))
                rows += _flash_rows("pty, MicroPython unix port", c, _image(2048, "bench-mp", 1))
                c.close()
        else:
            rows.append({"bench": "MicroPython rows", "value": float("nan"), "unit": "-",
                         "detail": "skipped: no `micropython` command"})
        for ber in (1e-4, 1e-3, 1e-2):
            outcomes = []
            secs = []
            resends = []
            for seed in range(3):
                nvm_file = tmp / f"fault-{ber:g}-{seed}.nvm"
                with EmulatorProcess(["--test-chip", str(N_8K), "--uid", "bench-8k"], nvm=nvm_file) as emu:
                    clean = BoardClient(SerialTransport.open(emu.path))
                    flash_table(clean, _image(N_8K, "bench-8k", 1))
                    clean.close()
                    c = BoardClient(SerialTransport.open(f"eicalfault://{emu.path}?ber={ber}&seed={seed}"))
                    t = time.perf_counter()
                    try:
                        flash_table(c, _image(N_8K, "bench-8k", 2))
                        outcomes.append("ok")
                    except LinkLost:
                        outcomes.append("lost")
                    secs.append(time.perf_counter() - t)
                    st = c.stats
                    resends.append(st.resends_nak + st.resends_damaged + st.timeouts)
                    c.close()
                    check = BoardClient(SerialTransport.open(emu.path))
                    gen = check.hello().generation
                    check.close()
                    outcomes[-1] += f" gen {gen}"  # gen 1: the old table, gen 2: the new one
            rows.append({"bench": f"flash 8 KiB at byte error rate {ber:g} (pty, 3 seeds)",
                         "value": statistics.median(secs) * 1e3, "unit": "ms median",
                         "detail": "; ".join(outcomes) + f"; resends {resends}"})
    return rows


def main() -> None:
    rows = run()
    print("serial bridge over a pty (the board emulator in a separate process)")
    print(f"{'benchmark':62s} {'value':>10s} {'unit':10s} detail")
    for r in rows:
        print(f"{r['bench']:62s} {r['value']:10.1f} {r['unit']:10s} {r['detail']}")


if __name__ == "__main__":
    main()
