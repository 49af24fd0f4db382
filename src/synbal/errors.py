"""One exception family for synbal.

Every error synbal raises on bad input is a :class:`SynbalError` (itself a ``ValueError``), so
callers can catch one type; the subclasses say which kind of input was wrong, and every message
names the offending item (unit, edge, parameter, graph node, file).

>>> from synbal.errors import SynbalError, GraphFormatError
>>> issubclass(GraphFormatError, SynbalError) and issubclass(SynbalError, ValueError)
True
"""

from __future__ import annotations

__all__ = [
    "ActivationError",
    "CheckpointError",
    "DataError",
    "DistributedError",
    "GraphFormatError",
    "InvalidWeightError",
    "ModelError",
    "NumericRangeError",
    "OptionError",
    "RegularizerError",
    "SynbalError",
    "UnsafeFileError",
    "UnsupportedOperationError",
    "UnsupportedProblemError",
    "VerificationError",
]


class SynbalError(ValueError):
    """Base class of every error synbal raises for bad input or failed checks.

    >>> import synbal
    >>> try:
    ...     synbal.balance(object(), "l2")
    ... except SynbalError as exc:
    ...     print(exc)
    cannot balance an object of type object; expected a synbal.Graph or a torch.nn.Module
    """


class GraphFormatError(SynbalError):
    """A network description (JSON or in-memory) is malformed: unknown unit, duplicate edge, …

    >>> import synbal
    >>> try:
    ...     synbal.Graph.from_dict({"format": "synbal.graph/1", "units": [{"name": "x", "role": "input"}],
    ...                             "edges": [["x", "y", 1.0]]})
    ... except GraphFormatError as exc:
    ...     print(exc)
    edge x -> y names unknown unit 'y'
    """


class ActivationError(SynbalError):
    """An activation specification is unknown or has invalid parameters.

    >>> import synbal
    >>> units = [{"name": "x", "role": "input"}, {"name": "h", "role": "hidden", "activation": "swish"}]
    >>> try:
    ...     synbal.Graph.from_dict({"format": "synbal.graph/1", "units": units, "edges": []})
    ... except ActivationError as exc:
    ...     print(str(exc).split(";")[0])
    unit 'h': unknown activation 'swish'
    """


class RegularizerError(SynbalError):
    """A regularizer specification is invalid (e.g. ``p <= 0`` or an unparsable string).

    >>> import synbal
    >>> try:
    ...     synbal.parse_regularizer("l-1")
    ... except RegularizerError as exc:
    ...     print(exc)
    regularizer 'l-1': power must be > 0, got p=-1
    """


class InvalidWeightError(SynbalError):
    """A weight or bias is NaN or infinite.

    >>> import numpy as np, synbal
    >>> try:
    ...     synbal.balance(synbal.DenseNet([np.array([[np.nan]]), np.array([[1.0]])]), "l2")
    ... except InvalidWeightError as exc:
    ...     print(exc)
    DenseNet layer 0: weight matrix has NaN or Inf entries
    """


class ModelError(SynbalError):
    """A PyTorch model cannot be balanced as given (train-mode BatchNorm, broken weight tie, …).

    >>> import torch, synbal
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3), nn.ReLU(), nn.Linear(3, 1))  # training mode
    >>> try:
    ...     synbal.balance(model, "l2", example_inputs=(torch.zeros(2, 2),))
    ... except ModelError as exc:
    ...     print(str(exc).split(":")[0])
    BatchNorm '1' is in training mode
    """


class UnsupportedOperationError(ModelError):
    """A traced model contains an operation whose rescaling behaviour synbal does not know.

    >>> import torch, synbal
    >>> from torch import nn
    >>> class SortedHidden(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.a, self.b = nn.Linear(2, 3), nn.Linear(3, 1)
    ...     def forward(self, x):
    ...         return self.b(torch.sort(torch.relu(self.a(x)), dim=1).values)
    >>> try:
    ...     synbal.balance(SortedHidden(), "l2", example_inputs=(torch.zeros(1, 2),))
    ... except UnsupportedOperationError as exc:
    ...     print(str(exc).split(" is not supported")[0])
    node 'sort': operation torch.sort in module '<root>'
    """


class CheckpointError(ModelError):
    """A model folder cannot be balanced out of core: a shard is missing or cut short, the index names
    a tensor that is not there, the config cannot be built, or the weights are not in safetensors.

    >>> import tempfile, synbal.torch
    >>> try:
    ...     synbal.torch.balance_checkpoint(tempfile.mkdtemp(), tempfile.mkdtemp() + "/out")
    ... except CheckpointError as exc:
    ...     print(str(exc).split(" /")[0])
    no config.json in model folder
    """


class UnsafeFileError(ModelError):
    """A model file could only be loaded by running code from it (pickled members, compiled code, …).

    Loading such a file needs an explicit opt-in (``--trust-pickle`` / ``trust_pickle=True``).

    >>> import os, tempfile, zipfile, torch, synbal.torch
    >>> model = torch.nn.Sequential(torch.nn.Linear(3, 2))
    >>> path = os.path.join(tempfile.mkdtemp(), "m.pt2")
    >>> torch.export.save(torch.export.export(model, (torch.zeros(1, 3),)), path)
    >>> with zipfile.ZipFile(path, "a") as archive:  # add compiled code, which loading would run
    ...     archive.writestr("m/data/aotinductor/model/model.so", b"")
    >>> try:
    ...     synbal.torch.load_exported(path)
    ... except UnsafeFileError as exc:
    ...     print(str(exc).split(": ", 1)[1].split(",")[0])
    member 'data/aotinductor/model/model.so' holds compiled AOTInductor code
    """


class UnsupportedProblemError(SynbalError):
    """A balancing method (or a regularizer) cannot solve this kind of problem: e.g. a problem with
    signed unit coefficients (queries against keys, see :mod:`synbal._problem.signed`) given to a
    method whose kernels assume that every unit scales the weights into it up.

    >>> import numpy as np, synbal
    >>> from synbal._problem.problem import BalanceProblem, CostBlock
    >>> from synbal._solvers import SolveOptions, solve
    >>> prob = BalanceProblem(np.ones(1), [CostBlock(2.0, [0], [-1], [[4.0]]),
    ...                                    CostBlock(2.0, [0], [-1], [[1.0]], row_sign=-1.0)])
    >>> try:
    ...     solve(prob, synbal.parse_regularizer("l2"), "tied", SolveOptions(sets=[[0]]))
    ... except UnsupportedProblemError as exc:
    ...     print(str(exc).split(" (")[0])
    method 'tied' cannot solve a problem with signed unit coefficients
    """


class OptionError(SynbalError):
    """An option the chosen method or source does not take (a misspelt keyword, ``sets=`` with
    ``method="stochastic"``, …); the message names the options it does take.

    >>> import numpy as np, synbal
    >>> g = synbal.Graph.from_layers([np.array([[4.0]]), np.array([[0.25]])])
    >>> synbal.balance(g, "l2", "exact", closed_form=True)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    synbal.errors.OptionError: method 'exact' does not take closed_form=True; it takes tol, max_sweeps, seed, progress
    """


class NumericRangeError(SynbalError):
    """A balanced state exists but cannot be represented in float64 (a scale, weight or ``R`` overflows).

    >>> import synbal
    >>> units = [{"name": "x", "role": "input"}, {"name": "h", "role": "hidden", "activation": "relu"},
    ...          {"name": "y", "role": "output"}]
    >>> g = synbal.Graph.from_dict({"format": "synbal.graph/1", "units": units,
    ...                             "edges": [["x", "h", 1e-320], ["h", "y", 1e300]]})
    >>> try:  # balanced, h's scale would be about 1e310
    ...     synbal.balance(g, "l2")
    ... except NumericRangeError as exc:
    ...     print(str(exc).split(",")[0])
    the balanced scale of unit 'h' is e^713.801
    """


class VerificationError(SynbalError):
    """The balanced network does not compute the same function as the original.

    >>> import torch, synbal
    >>> class Drifting(torch.nn.Module):  # its output changes from call to call
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.a, self.b, self.calls = torch.nn.Linear(2, 3), torch.nn.Linear(3, 1), 0
    ...     def forward(self, x):
    ...         self.calls += 1
    ...         return self.b(torch.relu(self.a(x))) * self.calls
    >>> try:
    ...     synbal.balance(Drifting(), "l2", example_inputs=(torch.ones(1, 2),))
    ... except VerificationError as exc:
    ...     print(str(exc)[:32])
    Drifting: output 0 changed by 0.
    """


class DataError(SynbalError):
    """A data file is missing, truncated, corrupt or of the wrong shape.

    >>> from synbal.data import load_mnist
    >>> try:
    ...     load_mnist("/no/such/dir")
    ... except DataError as exc:
    ...     print(exc)
    MNIST: data directory '/no/such/dir' does not exist
    """


class DistributedError(SynbalError):
    """A collective step of distributed balancing failed: a rank did not join in time, or left.

    Raised on every rank still waiting, instead of hanging until the process group's own timeout.

    >>> from synbal._adapters.torch.collective import Collective
    >>> try:  # no torch.distributed process group in this process
    ...     Collective()
    ... except DistributedError as exc:
    ...     print(exc)
    distributed balancing needs an initialised torch.distributed process group
    """
