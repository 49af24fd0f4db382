"""Which query/key groups the balance problem can express, once inverse pairs are resolved.

A key slot (sign −1) scales by ``1/λ``; the problem core has signed *rows* only
(:mod:`synbal._problem.signed`), so a group with key slots is kept scalable only when

* no parameter reads a key slot as its *column* (a layer applied to the keys would scale by ``λ``
  against them: a signed column), and
* no parameter whose rows are key slots reads the same group as a column (a signed self-loop).

Otherwise the group is fixed, with the reason.

>>> import numpy as np
>>> from synbal._adapters.torch.slots import Resolution
>>> from synbal._adapters.torch.walker import ParamUse
>>> res = Resolution(np.array([0, 1, 1, 2]), np.array([True, False, False]), {}, np.array([1, 1, -1, 1]))
>>> check_signed_uses(res, {"w": ParamUse("w", np.array([[3]]), np.array([[2]]))})  # reads a key slot
>>> bool(res.fixed[1]), res.reasons[1]
(True, "a layer reads key dimensions as its input ('w'): not expressible as a query/key pair")
"""

from __future__ import annotations

import numpy as np

from synbal._adapters.torch.slots import Resolution
from synbal._adapters.torch.walker import ParamUse

__all__ = ["check_signed_uses"]


def check_signed_uses(res: Resolution, uses: dict[str, ParamUse]) -> None:
    """Fix (in ``res``) every group with key slots that the problem cannot express (module docstring)."""
    assert res.sign is not None
    sign, comp = res.sign, res.component
    for use in uses.values():
        col_neg = sign[use.col] < 0
        if col_neg.any():
            why = f"a layer reads key dimensions as its input ({use.name!r}): not expressible as a query/key pair"
            _fix(res, np.unique(comp[use.col[col_neg]]), why)
        row_neg = sign[use.row] < 0
        if row_neg.any():
            loops = np.intersect1d(comp[use.row[row_neg]], comp[use.col])
            _fix(res, loops, f"key rows of {use.name!r} read their own query/key group")


def _fix(res: Resolution, comps: np.ndarray, why: str) -> None:
    for c in comps.tolist():
        if not res.fixed[c]:
            res.fixed[c] = True
            res.reasons[c] = why
