"""Datasets for training and the reproductions: MNIST, Fashion-MNIST, CIFAR-10.

* :func:`load_mnist` — the four IDX ``.gz`` files at a path, or (no path) a deterministic
  MNIST subset embedded in the package (10,000 train / 2,000 test, SHA-256 verified);
* :func:`load_fashion_mnist` — same format; default path is where the Debian package
  ``dataset-fashion-mnist`` installs it;
* :func:`load_cifar10` — the python-format batch files, read with a restricted unpickler.

Every loader returns an :class:`ImageDataset`; missing, truncated or malformed files raise
:class:`~synbal.errors.DataError` naming the file.

>>> from synbal.data import load_mnist
>>> x, y = load_mnist().tensors("test")
>>> tuple(x.shape), int(y[:5].sum())
((2000, 784), 14)
"""

from __future__ import annotations

from synbal.data._cifar import load_cifar10
from synbal.data._dataset import ImageDataset
from synbal.data._mnist import load_fashion_mnist, load_mnist

__all__ = ["ImageDataset", "load_cifar10", "load_fashion_mnist", "load_mnist"]
