"""The max-norm (range) regularizer ``"linf"``: equalization for quantization, made canonical.

Per hidden unit ``i``: ``IN_i = max |incoming w|``, ``OUT_i = max |outgoing w|`` (biases scaled
but, by default, not counted: see :mod:`synbal._linf.regularizer`). The network's cost is its
largest weight. Scaling ``i`` by ``λ`` multiplies ``IN_i`` by ``λ`` and ``OUT_i`` by ``λ^{-c}``.

**Balance condition (any degree c).** The unit's own contribution ``max(λ IN, λ^{-c} OUT)`` is
smallest at ``λ* = (OUT/IN)^{1/(1+c)}``, where ``IN = OUT`` — for a BiPU of degree ``c`` too.
It is also the ``p → ∞`` limit of the Lp condition ``IN_p = c·OUT_p``: taking ``p``-th roots,
``IN_p^{1/p} → IN``, ``(c·OUT_p)^{1/p} → OUT``; the factor ``c`` disappears.

**What is unique and what is not.** In logs ``u`` every edge ``j → i`` weighs
``a_ij + u_i − c_j u_j`` (``a`` = log of the largest weight between the two units).

* *Per-unit balance is unique for feed-forward nets of degree-1 units:* if ``u ≠ v`` were both
  balanced, take the set ``K`` of units where ``u − v`` attains its maximum ``D > 0``; balance
  ``2u_k = max_l(a_kl + u_l) − max_j(a_jk − u_j)`` forces the heaviest outgoing edge of every
  ``k ∈ K`` to end in ``K`` (fixed units have ``u − v = 0``), so following those edges never
  reaches an output: a cycle among hidden units. Without such cycles ``D ≤ 0``, and by symmetry
  ``u = v``.
* *It is not unique in general.* Hidden cycles arise from recurrent weights and from residual
  ties (one group per channel of a residual stream feeds a block that adds back into it). Then
  a cycle whose weights dominate its units can be shifted as a whole and every unit stays
  balanced; units of degree ``c ≠ 1`` break the argument above as well. Per-unit sweeps
  (``method="cyclic"`` / ``"stochastic"``) then end in a state that depends on the order and on
  the start (a random rescaling of the input changes it).
* *The canonical state synbal picks* (``method="exact"``) minimises the vector of all log-weights
  sorted in decreasing order *lexicographically*: first the largest weight of the network, then,
  among all minimisers, the second largest, and so on. Its weights are unique (at each level the
  edges with a positive LP dual are tight in every optimum and get fixed; every level fixes at
  least one), so it does not depend on any order, start, or prior rescaling of the network. It
  is per-unit balanced (otherwise a small step of one unit lowers the top of the sorted vector),
  and for degree-1 units every *set* of units is balanced too (largest weight entering the set
  = largest leaving it): this is exactly the max-balanced state of Schneider & Schneider
  (1991), computed here by their cycle-contraction algorithm (:mod:`synbal._linf.solve`). For
  degrees ``≠ 1`` it is computed by a sequence of linear programs (:mod:`synbal._linf.lexmin`).
  The Lp-balanced states converge towards it as ``p`` grows (tested numerically, not proved
  here; the tests measure the distance at p = 8 … 64).

>>> import synbal
>>> g = synbal.Graph.from_dict({"format": "synbal.graph/1",
...     "units": [{"name": "x1", "role": "input"}, {"name": "x2", "role": "input"},
...               {"name": "h", "role": "hidden", "activation": "relu"},
...               {"name": "y", "role": "output"}],
...     "edges": [["x1", "h", 4.0], ["x2", "h", -1.0], ["h", "y", 0.25]], "biases": {"h": 9.0}})
>>> res = synbal.balance(g, "linf")
>>> round(res.scales["h"], 12), res.regularizer_before, res.regularizer_after
(0.25, 4.0, 1.0)
>>> res.net.biases  # scaled with its unit, but not counted (use 'linf+bias' to count it)
{'h': 2.25}
"""

from synbal._linf.graph import MaxGraph
from synbal._linf.lexmin import lexmin_lp, local_sweeps
from synbal._linf.regularizer import MaxNormRegularizer, is_linf_spec, parse_linf
from synbal._linf.solve import max_balance_unit_degree

__all__ = [
    "MaxGraph",
    "MaxNormRegularizer",
    "is_linf_spec",
    "lexmin_lp",
    "local_sweeps",
    "max_balance_unit_degree",
    "parse_linf",
]
