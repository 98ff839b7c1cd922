# The on-board tracker's small tools (tracker.py): typed zero arrays, a quantile for STATUS, and the exponentially
# weighted drift line (docs/controller.md, "On-board tracking").
#
# MicroPython subset: no numpy, typing, dataclasses, f-strings.

try:
    from array import array
except ImportError:  # pragma: no cover - very old MicroPython ports
    from uarray import array


def zeros(typecode, n):
    a = array(typecode)
    for _ in range(n):
        a.append(0)
    return a


def quantile(values, q):
    """The q-quantile of a list of floats (linear interpolation; sorts a copy: only for STATUS, not per window)."""
    v = sorted(values)
    if not v:
        return 0.0
    x = q * (len(v) - 1)
    i = int(x)
    if i + 1 >= len(v):
        return v[-1]
    return v[i] + (x - i) * (v[i + 1] - v[i])


class Trend:
    """An exponentially weighted straight line y(t) through one point per window; times are kept relative to
    the present (``shift`` moves them), so the sums stay bounded however long the tracker runs.

    How far the line's slope is trusted, with var_b its variance (one window's noise over the spread of the times):

    - ``prior`` given (the variance of a zero-mean normal prior on the slope): the posterior mean,
      b prior / (prior + var_b). The rate line's choice: a slope from the first few windows is mostly their noise
      and is shrunk hard, a slope after 20 s of windows is used almost whole, whatever its size.
    - otherwise the slope's own signal-to-noise ratio t: b t^2 / (t^2 + SHRINK) (the ratio line's). It also kills
      a real drift whose first windows happened to show a small slope, and the line then falls back to its
      weighted mean, about 12 s behind at 24 s into a ramp: on 26 chips through the 10 K ramp the rate line
      missed 5 % on 9 with it and on 6 with the prior (docs/controller.md, "On-board tracking"). SHRINK 1 against
      4 and 0 on 11 chips (the first measurement): worst rate error 5.6 % on average against 6.5 % and 5.4 %, the
      last with four chips over 0.05 in balance, not two."""

    __slots__ = ("s0", "s1", "s2", "sy", "sty", "syy", "sww", "n", "shrink", "prior")

    SHRINK = 1.0

    def __init__(self, shrink=None, prior=None):
        self.shrink = self.SHRINK if shrink is None else shrink
        self.prior = prior
        self.s0 = 0.0
        self.s1 = 0.0
        self.s2 = 0.0
        self.sy = 0.0
        self.sty = 0.0
        self.syy = 0.0
        self.sww = 0.0
        self.n = 0

    def shift(self, dt, decay):
        """Time moves on by ``dt``: every stored time becomes t - dt, and every old weight is multiplied by
        ``decay``."""
        s0, s1 = self.s0, self.s1
        self.s2 = (self.s2 - 2.0 * dt * s1 + dt * dt * s0) * decay
        self.s1 = (s1 - dt * s0) * decay
        self.sty = (self.sty - dt * self.sy) * decay
        self.s0 = s0 * decay
        self.sy = self.sy * decay
        self.syy = self.syy * decay
        self.sww = self.sww * decay * decay

    def add(self, t, y, w):
        self.s0 += w
        self.s1 += w * t
        self.s2 += w * t * t
        self.sy += w * y
        self.sty += w * t * y
        self.syy += w * y * y
        self.sww += w * w
        self.n += 1

    def mean(self, default):
        return self.sy / self.s0 if self.n and self.s0 > 0.0 else default

    def slope(self, noise_var):
        """The slope, shrunk by the prior or by t^2 / (t^2 + SHRINK) (0 until three windows are in). ``noise_var``:
        the variance of one window's point, from the scatter of its sub-windows (known from the first window on;
        the residuals of a line through three points would say almost nothing)."""
        s0 = self.s0
        if self.n < 3 or s0 <= 0.0:
            return 0.0
        tbar = self.s1 / s0
        mean = self.sy / s0
        stt = self.s2 - s0 * tbar * tbar
        if stt <= 1e-12 * max(self.s2, 1e-30):
            return 0.0
        b = (self.sty - s0 * tbar * mean) / stt
        if noise_var < 0.0:
            return 0.0
        var_b = noise_var / stt * (self.sww / s0)
        if var_b <= 0.0:
            return b
        if self.prior is not None:
            return b * self.prior / (self.prior + var_b)
        t2 = b * b / var_b
        return b * t2 / (t2 + self.shrink)

    def predict(self, t, default, noise_var):
        """The line at time ``t``; ``default`` before any window."""
        if self.n == 0 or self.s0 <= 0.0:
            return default
        return self.sy / self.s0 + self.slope(noise_var) * (t - self.s1 / self.s0)
