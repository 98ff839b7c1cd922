# The on-board tracker's per-window cost, run by the MicroPython unix port (and by CPython as the reference):
# ``micropython [-X heapsize=64M] tracker_cost_mp.py FIRMWARE_PARENT N WINDOWS MODE``, MODE ``time`` (the garbage
# collector runs as it would on a board: the time includes its work) or ``alloc`` (collector off, to count the bytes
# a window allocates; needs a heap that holds them). Prints one JSON line. Plain MicroPython subset.
import gc
import json
import sys

sys.path.insert(0, sys.argv[1])
from array import array  # noqa: E402

from firmware.tracker import Tracker  # noqa: E402

try:
    from time import ticks_diff, ticks_us
except ImportError:  # CPython
    from time import perf_counter_ns

    def ticks_us():
        return perf_counter_ns() // 1000

    def ticks_diff(a, b):
        return a - b

N = int(sys.argv[2])
WINDOWS = int(sys.argv[3]) if len(sys.argv) > 3 else 12
MODE = sys.argv[4] if len(sys.argv) > 4 else "time"
SPLITS = 4


def lcg(state):
    return (state * 1103515245 + 12345) & 0x7FFFFFFF


def params():
    p = {"window_ms": 2500, "splits": SPLITS, "halflife_ms": 15000, "dev_halflife_ms": 0, "boot": 0, "band": 0.25,
         "rate_hz": 10.0, "fano": 1.2, "rate_se": 0.035, "balance_se": 0.015, "gamma": 1.0, "sat_ratio": 4.0,
         "silent_expected": 20.0, "max_step": 0.1}
    p["beta"] = array("f", [2.0] * N)
    p["a"] = array("f", [200.0] * N)
    p["b"] = array("f", [190.0] * N)
    p["offset"] = array("f", [1.5] * N)
    return p


# inputs: SPLITS sub-windows of counts (~12 per 1.25 s at 10 Hz) and proxies, drawn once, reused every window
state = 12345
subs = []
for k in range(SPLITS):
    counts = []
    prox = []
    for n in range(N):
        state = lcg(state)
        counts.append(8 + state % 9)
        state = lcg(state)
        prox.append(((state % 2001) - 1000) / 100.0)
    subs.append((counts, prox))
p = params()
gc.collect()
m0 = gc.mem_alloc() if hasattr(gc, "mem_alloc") else 0
tr = Tracker(p, [256] * N, [250] * N, 256, 256, 10, 10, N, 1, False, 65535)
gc.collect()
m1 = gc.mem_alloc() if hasattr(gc, "mem_alloc") else 0
sub_us = []
end_us = []
garbage = []
peak = 0
for w in range(WINDOWS):
    if MODE == "alloc":
        gc.collect()
        gc.disable()
    a0 = gc.mem_alloc() if hasattr(gc, "mem_alloc") else 0
    for k in range(SPLITS):
        counts, prox = subs[k]
        t0 = ticks_us()
        tr.add_subwindow(counts, prox, 1250.0, None)
        dt = ticks_diff(ticks_us(), t0)
        (end_us if k == SPLITS - 1 else sub_us).append(dt)
        if hasattr(gc, "mem_alloc"):
            peak = max(peak, gc.mem_alloc() - m0)
    a1 = gc.mem_alloc() if hasattr(gc, "mem_alloc") else 0
    if MODE == "alloc":
        gc.enable()
        garbage.append(a1 - a0)
    else:
        garbage.append(0)
sub_us.sort()
end_us.sort()
garbage.sort()
print(json.dumps({"n": N, "windows": WINDOWS, "implementation": sys.implementation.name,
                  "subwindow_us": sub_us[len(sub_us) // 2], "window_end_us": end_us[len(end_us) // 2],
                  "window_us": sub_us[len(sub_us) // 2] * (SPLITS - 1) + end_us[len(end_us) // 2],
                  "window_min_us": sub_us[0] * (SPLITS - 1) + end_us[0],
                  "state_bytes": m1 - m0, "alloc_bytes_per_window": garbage[len(garbage) // 2],
                  "heap_peak_bytes": peak, "mode": MODE, "windows_done": tr.windows}))
