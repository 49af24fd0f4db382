"""Compiled (numba) code, one module per role.

* ``chain`` — the ``exact`` solver's chain iteration (odd/even steps and a tridiagonal coarse solve);
* ``unit_steps`` — the unit-step kernels of the ``stochastic`` and ``cyclic`` schedules, on the
  two layouts built by ``unit_graph`` (a CSR unit graph: any problem) and ``chain_steps`` (each
  unit's rows side by side: dense chains such as MLPs);
* ``many_runs`` — the one many-runs driver (independent stochastic runs, ``fig9``) for both layouts;
* ``powermatrix`` — matrix-free ``coef·|W|^p`` cost blocks;
* ``lowlevel`` — matrices from raw addresses (:class:`~synbal._compiled.lowlevel.MatrixTable`) and prefetch.

The step math the kernels run is :mod:`synbal._solvers.steps`, shared with the Python schedules.
Private: reached through :func:`synbal.balance` and the solvers in :mod:`synbal._solvers`.
"""
