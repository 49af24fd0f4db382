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
    "VerificationError",
]


class SynbalError(ValueError):
    """Base class of every error synbal raises for bad input or failed checks."""


class GraphFormatError(SynbalError):
    """A network description (JSON or in-memory) is malformed: unknown unit, duplicate edge, …"""


class ActivationError(SynbalError):
    """An activation specification is unknown or has invalid parameters."""


class RegularizerError(SynbalError):
    """A regularizer specification is invalid (e.g. ``p <= 0`` or an unparsable string)."""


class InvalidWeightError(SynbalError):
    """A weight or bias is NaN or infinite."""


class ModelError(SynbalError):
    """A PyTorch model cannot be balanced as given (train-mode BatchNorm, broken weight tie, …)."""


class UnsupportedOperationError(ModelError):
    """A traced model contains an operation whose rescaling behaviour synbal does not know."""


class UnsafeFileError(ModelError):
    """A model file could only be loaded by running code from it (pickled members, compiled code, …).

    Loading such a file needs an explicit opt-in (``--trust-pickle`` / ``trust_pickle=True``).
    """


class OptionError(SynbalError):
    """An option the chosen method or source does not take (a misspelt keyword, ``sets=`` with
    ``method="stochastic"``, …); the message names the options it does take."""


class NumericRangeError(SynbalError):
    """A balanced state exists but cannot be represented in float64 (a scale, weight or ``R`` overflows)."""


class VerificationError(SynbalError):
    """The balanced network does not compute the same function as the original."""


class DataError(SynbalError):
    """A data file is missing, truncated, corrupt or of the wrong shape."""


class DistributedError(SynbalError):
    """A collective step of distributed balancing failed: a rank did not join in time, or left.

    Raised on every rank still waiting, instead of hanging until the process group's own timeout.
    """
