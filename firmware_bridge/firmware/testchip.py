# The MicroPython test chip: a tiny, deterministic, pure-Python stand-in for a chip.
#
# It exists so that the firmware can run under the MicroPython unix port (which has no numpy, hence no emulated
# neuron model) and still answer HELLO, SET_CODES and MEASURE with plausible numbers. It is NOT a neuron model:
# there is no membrane, no spiking and no noise. Per neuron i it draws two fixed gain factors a_i, b_i in
# [0.8, 1.25] and an ADC offset o_i in [-5, 5] pA from a small LCG seeded by ``seed``, and then
#
#     drive_i  = a_i * code_e / code_ref - b_i * code_i / code_ref * 0.8
#     rate_i   = max(0, 50 Hz * (drive_i + 0.6))                      (counts = floor(rate_i * window_s))
#     proxy_i  = 100 pA * drive_i + o_i                               (only on monitored neurons)
#
# which is monotone in both codes like a real E/I pair, so a controller can even converge on it. The real
# emulated chip (hw_models.emulator.NumpyDevice) is what the CPython board emulator serves.
#
# MicroPython subset: no numpy, typing, dataclasses, f-strings.

import binascii

try:
    import hashlib
except ImportError:  # pragma: no cover - every MicroPython port we target has hashlib
    hashlib = None

PROFILE = "mp-testchip"


class TestChip:
    """Chip port of the MicroPython test chip (see the module comment for its transfer function).

    Parameters
    ----------
    n_neurons
        Neurons, one gain_e and one gain_i code each.
    uid
        The chip's UID as HELLO reports it.
    seed
        Seeds the fixed per-neuron factors.
    bits, code_ref
        DAC width and the code of nominal gain.
    """

    # Not a pytest test class despite its name.
    __test__ = False

    def __init__(self, n_neurons=64, uid="mp-testchip-0001", seed=1, bits=8, code_ref=128):
        self.n = n_neurons
        self.uid = uid
        self.bits = bits
        self.code_ref = code_ref
        state = (seed * 2654435761 + 12345) & 0x7FFFFFFF
        self.a = []
        self.b = []
        self.off = []
        for _ in range(n_neurons):
            vals = []
            for _k in range(3):
                state = (state * 1103515245 + 12345) & 0x7FFFFFFF
                vals.append(state / 2147483648.0)
            self.a.append(0.8 + 0.45 * vals[0])
            self.b.append(0.8 + 0.45 * vals[1])
            self.off.append(-5.0 + 10.0 * vals[2])
        self.codes = {"gain_e": [code_ref] * n_neurons, "gain_i": [code_ref] * n_neurons}
        self.n_measures = 0

    def info(self):
        text = "%s:n=%d:bits=%d:ref=%d" % (PROFILE, self.n, self.bits, self.code_ref)
        sha = binascii.hexlify(hashlib.sha256(text.encode()).digest()).decode()
        knob = {"sharing": "neuron", "bits": self.bits, "code_ref": self.code_ref, "n_groups": self.n}
        ke = dict(knob)
        ke["name"] = "gain_e"
        ki = dict(knob)
        ki["name"] = "gain_i"
        return {"uid": self.uid, "profile": PROFILE, "profile_sha256": sha, "n_neurons": self.n, "n_cores": 1,
                "model": "testchip", "dt_ms": 0.1, "speedup": 1.0, "counter_bits": 16, "knobs": [ke, ki]}

    def set_codes(self, codes):
        for name in codes:
            self.codes[name] = list(codes[name])

    def tracker_section(self, rate_hz=30.0, band=0.25, boot=0, window_ms=1000, splits=4):
        """A tracker section (the firmware's units, nvm.encode_table) that says what this chip is: its exact
        balance sensitivities (proxy = 100 pA a_i code_e/ref - 80 pA b_i code_i/ref + offset_i) and offsets, and a
        weak warm-start prior (the reference codes are not a calibration: rate_se and balance_se 0.3). The
        rate slope is a placeholder (1.0): at balance this chip's rate (30 Hz) does not depend on the scale, so a
        rate target other than 30 Hz walks the scale to the band's edge (the band tests use that)."""
        n = self.n
        return {"boot": boot, "splits": splits, "window_ms": window_ms, "halflife_ms": 3 * window_ms,
                "dev_halflife_ms": 0, "band": band, "rate_hz": rate_hz, "fano": 1.0, "rate_se": 0.3,
                "balance_se": 0.3, "gamma": 0.0, "sat_ratio": 4.0, "silent_expected": 20.0, "max_step": 0.1,
                "beta": [1.0] * n, "a": [100.0 * x for x in self.a], "b": [80.0 * x for x in self.b],
                "offset": list(self.off)}

    def measure(self, window_ms, monitor):
        ce = self.codes["gain_e"]
        ci = self.codes["gain_i"]
        ref = float(self.code_ref)
        counts = []
        proxies = []
        watch = None
        if monitor is not None:
            watch = {}
            for i in monitor:
                watch[i] = True
        for i in range(self.n):
            drive = self.a[i] * ce[i] / ref - 0.8 * self.b[i] * ci[i] / ref
            rate = 50.0 * (drive + 0.6)
            counts.append(int(rate * window_ms / 1000.0) if rate > 0 else 0)
            if watch is None or i in watch:
                proxies.append(100.0 * drive + self.off[i])
            else:
                proxies.append(None)
        self.n_measures += 1
        return counts, proxies, window_ms, None
