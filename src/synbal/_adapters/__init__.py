"""Adapters: extract a balance problem from a source and apply log-scales back to it.

:mod:`~synbal._adapters.protocol` holds the protocol and the registry; one adapter per source
kind sits beside it: explicit graphs (``graph``), weight matrices (``dense``), PyTorch models
(``torch``). :func:`synbal.balance` picks one by the source's type.
"""
