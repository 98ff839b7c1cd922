"""Per-neuron balance from the recorded current and conductance means, and what theory predicts (docs/model.md 1).

The balance index itself has one home, :mod:`calibrate.figures`; these helpers apply it to the two current parts a
recording holds.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import numpy as np

from .. import figures

__all__ = ["Theory", "signed_balance", "balance_index_of_parts", "conductance_ratio"]


@dataclass(frozen=True)
class Theory:
    """What docs/model.md (section 1) predicts for a balanced neuron.

    Attributes
    ----------
    model : str
        ``"cond_lif"`` or ``"dpi"``.
    vbal_mv : float or None
        Balance potential of the proxy ``Ibal = ge*(EE - Vbal) + gi*(EI - Vbal)`` (cond_lif only).
    ee_mv, ei_mv : float
        Excitatory and inhibitory reversal potentials (cond_lif only).
    """

    model: str = "cond_lif"
    vbal_mv: Optional[float] = None
    ee_mv: float = 0.0
    ei_mv: float = -80.0

    @property
    def conductance_ratio(self) -> Optional[float]:
        """``<ge>/<gi> = (Vbal - EI)/(EE - Vbal)`` at zero mean proxy (docs/model.md 1); None without Vbal or for dpi."""
        if self.model != "cond_lif" or self.vbal_mv is None:
            return None
        return (self.vbal_mv - self.ei_mv) / (self.ee_mv - self.vbal_mv)

    @classmethod
    def from_meta(cls, meta: Dict[str, Any]) -> Optional["Theory"]:
        """From a recording's ``meta`` (keys ``model``, ``vbal_mv``/``Vbal``, ``ee_mv``/``EE``, ``ei_mv``/``EI``)."""

        def get(*keys: str) -> Any:
            for k in keys:
                if k in meta and meta[k] is not None:
                    return meta[k]
            return None

        model = get("model")
        vbal = get("vbal_mv", "Vbal", "vbal")
        if model is None and vbal is None:
            return None
        ee, ei = get("ee_mv", "EE"), get("ei_mv", "EI")
        return cls(
            model=str(model or "cond_lif"),
            vbal_mv=None if vbal is None else float(vbal),
            ee_mv=0.0 if ee is None else float(ee),
            ei_mv=-80.0 if ei is None else float(ei),
        )


def signed_balance(iexc_mean: np.ndarray, iinh_mean: np.ndarray) -> np.ndarray:
    """Signed balance ``(<Iexc> + <Iinh>) / <Iexc>`` per neuron from the two current means: > 0 excitation
    dominates, < 0 inhibition (:func:`calibrate.figures.signed_balance` of the net current). ``Iexc = ge*(EE - Vbal)``
    (> 0) and ``Iinh = gi*(EI - Vbal)`` (< 0) for cond_lif; for dpi ``Iexc = Iampa`` and ``Iinh = -Igaba``. NaN
    where ``<Iexc> <= 0``."""
    e = np.asarray(iexc_mean, dtype=np.float64)
    return figures.signed_balance(e + np.asarray(iinh_mean, dtype=np.float64), e)


def balance_index_of_parts(iexc_mean: np.ndarray, iinh_mean: np.ndarray) -> np.ndarray:
    """Balance index ``|<Iexc> + <Iinh>| / <Iexc>`` per neuron from the two current means: the one balance index
    (:func:`calibrate.figures.balance_index`) of the net current ``Iexc + Iinh``. 0 at perfect mean balance, 1 with
    no inhibition; NaN where ``<Iexc> <= 0``."""
    e = np.asarray(iexc_mean, dtype=np.float64)
    return figures.balance_index(e + np.asarray(iinh_mean, dtype=np.float64), e)


def conductance_ratio(
    ge_mean: np.ndarray, gi_mean: np.ndarray, *, vbal_mv: float, ee_mv: float = 0.0, ei_mv: float = -80.0
) -> Tuple[np.ndarray, float]:
    """Per-neuron ``<ge>/<gi>`` and its balanced value ``(Vbal - EI)/(EE - Vbal)`` (docs/model.md 1).

    The mean proxy ``<ge>(EE - Vbal) + <gi>(EI - Vbal)`` is zero exactly when the ratio equals the theory, so
    ``balance_index = |1 - theory / ratio|``: the two say the same for cond_lif, in different units.

    Returns
    -------
    ratio : ndarray of float64, shape [N] (NaN where ``<gi> <= 0``)
    theory : float
    """
    ge = np.asarray(ge_mean, dtype=np.float64)
    gi = np.asarray(gi_mean, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(gi > 0, ge / gi, np.nan)
    return ratio, (vbal_mv - ei_mv) / (ee_mv - vbal_mv)
