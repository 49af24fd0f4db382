"""The balance problem: units and their degrees, aggregated costs, regularizers, diagnostics.

Private: the public names (:class:`~synbal.PowerRegularizer`, :func:`~synbal.parse_regularizer`,
:class:`~synbal.DeficitReport`, …) are exported by :mod:`synbal`.
"""
