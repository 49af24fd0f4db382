"""CIFAR-10 from its python-format batch files, read with a restricted unpickler.

The official ``cifar-10-python.tar.gz`` unpacks to ``cifar-10-batches-py/`` holding
``data_batch_1`` … ``data_batch_5`` and ``test_batch``: pickled dicts with ``b'data'`` (uint8
``(10000, 3072)``, channel-major rows: 1024 red, 1024 green, 1024 blue) and ``b'labels'``.
Pickles can run arbitrary code, so :class:`RestrictedUnpickler` resolves only the few globals
numpy needs to rebuild an array; anything else raises :class:`~synbal.errors.DataError`.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from synbal.data._dataset import ImageDataset
from synbal.errors import DataError

__all__ = ["CIFAR10_FILES", "RestrictedUnpickler", "load_cifar10", "read_cifar_batch"]

CIFAR10_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}


def _allowed_globals() -> dict[tuple[str, str], Any]:
    import codecs

    try:
        from numpy._core.multiarray import _reconstruct, scalar
        from numpy._core.numeric import _frombuffer  # type: ignore[attr-defined]
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct, scalar  # type: ignore[no-redef]
        from numpy.core.numeric import _frombuffer  # type: ignore[no-redef]
    table: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,  # how Python 3 writes bytes at protocol < 3
    }
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        table[(module, "_reconstruct")] = _reconstruct
        table[(module, "scalar")] = scalar
    for module in ("numpy.core.numeric", "numpy._core.numeric"):
        table[(module, "_frombuffer")] = _frombuffer  # arrays pickled at protocol 5
    for module in ("builtins", "__builtin__"):
        for name, obj in (("dict", dict), ("list", list), ("bytes", bytes), ("str", str), ("int", int)):
            table[(module, name)] = obj
    return table


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that only rebuilds dicts, lists, bytes, str, int and plain numpy arrays.

    >>> import pickle, io
    >>> RestrictedUnpickler(io.BytesIO(pickle.dumps({b"labels": [1, 2]}))).load()
    {b'labels': [1, 2]}
    >>> RestrictedUnpickler(io.BytesIO(pickle.dumps(print))).load()  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    synbal.errors.DataError: refusing to unpickle builtins.print (only numpy arrays ...)
    """

    _ALLOWED: dict[tuple[str, str], Any] | None = None

    def find_class(self, module: str, name: str) -> Any:
        if RestrictedUnpickler._ALLOWED is None:
            RestrictedUnpickler._ALLOWED = _allowed_globals()
        try:
            return RestrictedUnpickler._ALLOWED[(module, name)]
        except KeyError:
            raise DataError(
                f"refusing to unpickle {module}.{name} (only numpy arrays and plain containers are allowed)"
            ) from None


def read_cifar_batch(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """One batch file → ``(images uint8 (N, 32, 32, 3), labels int64 (N,))``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"CIFAR-10 batch file {str(path)!r} is missing")
    try:
        obj = RestrictedUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except DataError as exc:
        raise DataError(f"CIFAR-10 batch file {str(path)!r}: {exc}") from exc
    except Exception as exc:  # any unpickling failure means a corrupt or foreign file
        raise DataError(f"CIFAR-10 batch file {str(path)!r} is truncated or not a batch file: {exc}") from exc
    if not isinstance(obj, dict):
        raise DataError(f"CIFAR-10 batch file {str(path)!r} does not hold a dict")
    data = obj.get(b"data", obj.get("data"))
    labels = obj.get(b"labels", obj.get("labels"))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape = getattr(data, "shape", None)
        raise DataError(
            f"CIFAR-10 batch file {str(path)!r}: b'data' must be a uint8 array (N, 3072), got "
            f"{type(data).__name__} {shape}"
        )
    if not isinstance(labels, (list, np.ndarray)) or len(labels) != data.shape[0]:
        count = len(labels) if isinstance(labels, (list, np.ndarray)) else "no"
        raise DataError(f"CIFAR-10 batch file {str(path)!r}: {count} labels for {data.shape[0]} images")
    try:
        label_array = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"CIFAR-10 batch file {str(path)!r}: labels are not integers") from exc
    if label_array.size and (label_array.min() < 0 or label_array.max() > 9):
        raise DataError(f"CIFAR-10 batch file {str(path)!r}: labels outside 0..9")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy()
    return images, label_array


def load_cifar10(path: str | os.PathLike[str]) -> ImageDataset:
    """CIFAR-10 from the directory holding the batch files (or its parent).

    Images are ``(N, 32, 32, 3)``; :meth:`ImageDataset.tensors` returns them channels-first.
    Here six tiny batch files (two images each) stand in for the real ones:

    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> for name in CIFAR10_FILES["train"] + CIFAR10_FILES["test"]:
    ...     with open(os.path.join(folder, name), "wb") as f:
    ...         pickle.dump({b"data": np.full((2, 3072), 51, np.uint8), b"labels": [3, 7]}, f)
    >>> ds = load_cifar10(folder)
    >>> ds.n_train, ds.n_test, ds.image_shape, tuple(ds.tensors("test")[0].shape)
    (10, 2, (32, 32, 3), (2, 3072))
    """
    root = Path(path)
    if (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"
    if not root.is_dir():
        raise DataError(f"CIFAR-10 directory {str(root)!r} does not exist")
    parts: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split, names in CIFAR10_FILES.items():
        batches = [read_cifar_batch(root / name) for name in names]
        parts[split] = (
            np.concatenate([b[0] for b in batches]),
            np.concatenate([b[1] for b in batches]),
        )
    return ImageDataset(
        name="CIFAR-10",
        train_images=parts["train"][0],
        train_labels=parts["train"][1],
        test_images=parts["test"][0],
        test_labels=parts["test"][1],
        source=f"CIFAR-10 python batch files in {str(root)!r}",
    )
