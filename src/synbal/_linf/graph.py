"""The max-norm problem: one edge per pair of units carrying the largest weight between them.

For the max-norm only the largest magnitude between two units matters (a conv kernel's taps,
the weights of a tied group all scale alike), so a network collapses to a weighted directed
graph: ``loga[e] = log max coef·|w|`` over the weights from unit ``src[e]`` to ``dst[e]``
(``-1`` is the fixed node: visible units, non-scalable units, the constant behind a bias).
In the log-scales ``u`` an edge weighs ``loga + u_dst − c_src u_src``.

>>> import numpy as np
>>> from synbal._problem.problem import CustomCosts
>>> one = lambda x: x
>>> costs = CustomCosts(dst=[0, 0, -1], src=[-1, -1, 0], magnitude=[4.0, -2.0, 0.25], coef=1.0,
...                     g=one, dg=one)
>>> mg = MaxGraph.from_costs(costs, np.ones(1), ["h"])
>>> np.exp(mg.loga).tolist()          # the two input weights collapse into their max
[0.25, 4.0]
>>> [float(np.exp(v[0])) for v in mg.in_out(np.zeros(1))]
[4.0, 0.25]
>>> float(mg.relative_deficit(np.log([0.25]))[0])   # λ = (OUT/IN)^(1/2) = 1/4 balances h
0.0
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from synbal._problem.problem import CustomCosts

__all__ = ["MaxGraph"]


@dataclass
class MaxGraph:
    """Pair edges ``(dst, src, loga)`` of ``n`` scalable units with degrees ``degree``.

    ``constant`` is the log of the largest weight no scaling moves (between two fixed units,
    or a self-loop of a degree-1 unit); ``-inf`` when there is none.
    """

    degree: np.ndarray
    dst: np.ndarray
    src: np.ndarray
    loga: np.ndarray
    names: Sequence[str]
    constant: float = -np.inf
    _dead: np.ndarray | None = field(default=None, repr=False)

    @classmethod
    def from_costs(cls, costs: CustomCosts, degree: np.ndarray, names: Sequence[str]) -> MaxGraph:
        """Collapse per-weight magnitudes (zero-cost weights dropped) into one edge per unit pair."""
        degree = np.asarray(degree, dtype=np.float64).reshape(-1)
        n = degree.size
        mag = costs.coef * costs.magnitude
        keep = mag > 0
        dst, src, mag = costs.dst[keep], costs.src[keep], mag[keep]
        both_fixed = (dst < 0) & (src < 0)
        constant = float(np.log(mag[both_fixed].max())) if both_fixed.any() else -np.inf
        dst, src, mag = dst[~both_fixed], src[~both_fixed], mag[~both_fixed]
        key = (dst + 1) * (n + 1) + (src + 1)
        order = np.argsort(key, kind="stable")
        key, mag = key[order], mag[order]
        starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if key.size else np.zeros(0, dtype=np.int64)
        top = np.maximum.reduceat(mag, starts) if key.size else np.zeros(0)
        pair = key[starts]
        g = cls(degree, pair // (n + 1) - 1, pair % (n + 1) - 1, np.log(top), names, constant)
        loop = (g.dst == g.src) & (g.dst >= 0)
        still = loop & (degree[np.maximum(g.dst, 0)] == 1.0)
        if still.any():  # a degree-1 self-loop never changes: it only counts for the norm
            g.constant = max(g.constant, float(g.loga[still].max()))
            g.dst, g.src, g.loga = g.dst[~still], g.src[~still], g.loga[~still]
        return g

    @property
    def n(self) -> int:
        return int(self.degree.size)

    def weights(self, u: np.ndarray) -> np.ndarray:
        """Log-magnitude of every pair edge at log-scales ``u``."""
        ue = np.append(np.asarray(u, dtype=np.float64), 0.0)
        ce = np.append(self.degree, 1.0)
        return self.loga + ue[self.dst] - ce[self.src] * ue[self.src]

    def in_out(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per unit ``(log IN, log OUT)``: the largest incoming / outgoing log-magnitude (``-inf``: none)."""
        w = self.weights(u)
        IN = np.full(self.n + 1, -np.inf)
        OUT = np.full(self.n + 1, -np.inf)
        np.maximum.at(IN, self.dst, w)
        np.maximum.at(OUT, self.src, w)
        return IN[:-1], OUT[:-1]

    def dead_mask(self) -> np.ndarray:
        """Units with no incoming or no outgoing weight besides self-loops (never scaled)."""
        if self._dead is None:
            other = self.dst != self.src
            has_in = np.zeros(self.n + 1, dtype=bool)
            has_out = np.zeros(self.n + 1, dtype=bool)
            has_in[self.dst[other]] = True
            has_out[self.src[other]] = True
            self._dead = ~(has_in[:-1] & has_out[:-1])
        return self._dead

    def relative_deficit(self, u: np.ndarray) -> np.ndarray:
        """``|IN − OUT| / (IN + OUT)`` per unit (``= tanh(|log IN − log OUT| / 2)``); 0 for dead units."""
        IN, OUT = self.in_out(u)
        live = ~self.dead_mask()
        rel = np.zeros(self.n)
        rel[live] = np.tanh(np.abs(IN[live] - OUT[live]) / 2.0)
        return rel

    def norm(self, u: np.ndarray) -> float:
        """The largest weight of the network at log-scales ``u`` (the max-norm)."""
        w = self.weights(u)
        top = max(float(w.max()) if w.size else -np.inf, self.constant)
        return float(np.exp(top))

    def sorted_weights(self, u: np.ndarray) -> np.ndarray:
        """Every pair edge's log-magnitude, largest first (the vector the canonical state minimises)."""
        return np.sort(self.weights(u))[::-1]
