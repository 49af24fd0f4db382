"""MNIST and Fashion-MNIST from the four canonical IDX files, plus the embedded MNIST subset.

Files expected in a directory (``.gz`` or uncompressed): ``train-images-idx3-ubyte``,
``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``.

>>> ds = load_mnist()  # the embedded subset shipped inside the package
>>> ds.n_train, ds.n_test, ds.image_shape, ds.num_classes
(10000, 2000, (28, 28), 10)
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace
from pathlib import Path

import numpy as np

from synbal.data._dataset import ImageDataset
from synbal.data._idx import read_idx
from synbal.errors import DataError

__all__ = [
    "EMBEDDED_DIR",
    "FASHION_MNIST_DEFAULT",
    "IDX_FILES",
    "embedded_checksums",
    "load_fashion_mnist",
    "load_idx_dataset",
    "load_mnist",
]

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
EMBEDDED_DIR = Path(__file__).resolve().parent / "embedded"
CHECKSUM_FILE = "SHA256SUMS"
#: Where the Debian/Ubuntu package ``dataset-fashion-mnist`` installs the IDX files.
FASHION_MNIST_DEFAULT = Path("/usr/share/datasets/fashion-mnist")


def _locate(directory: Path, stem: str) -> Path:
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.is_file():
            return candidate
    raise DataError(f"data file {str(directory / (stem + '.gz'))!r} is missing")


def load_idx_dataset(directory: str | os.PathLike[str], name: str, *, classes: int = 10) -> ImageDataset:
    """Read the four canonical IDX files of an MNIST-format dataset from ``directory``."""
    root = Path(directory)
    if not root.is_dir():
        raise DataError(f"{name}: data directory {str(root)!r} does not exist")
    arrays: dict[str, np.ndarray] = {}
    paths: dict[str, Path] = {}
    for key, stem in IDX_FILES.items():
        paths[key] = _locate(root, stem)
        arrays[key] = read_idx(paths[key], ndim=3 if key.endswith("images") else 1)
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.shape[0] != labels.shape[0]:
            raise DataError(
                f"{name}: {str(paths[f'{split}_images'])!r} holds {images.shape[0]} images but "
                f"{str(paths[f'{split}_labels'])!r} holds {labels.shape[0]} labels"
            )
        if images.shape[1:] != (28, 28):
            raise DataError(f"{name}: {str(paths[f'{split}_images'])!r} has images of shape "
                            f"{images.shape[1:]}, expected (28, 28)")
        if labels.size and labels.max() >= classes:
            raise DataError(f"{name}: {str(paths[f'{split}_labels'])!r} has label {int(labels.max())} "
                            f"outside 0..{classes - 1}")
    return ImageDataset(
        name=name,
        train_images=arrays["train_images"],
        train_labels=arrays["train_labels"].astype(np.int64),
        test_images=arrays["test_images"],
        test_labels=arrays["test_labels"].astype(np.int64),
        source=f"{name} IDX files in {str(root)!r}",
    )


def embedded_checksums(directory: Path = EMBEDDED_DIR) -> dict[str, str]:
    """The recorded SHA-256 of each embedded file (from ``SHA256SUMS``), file name → hex digest."""
    listing = directory / CHECKSUM_FILE
    if not listing.is_file():
        raise DataError(f"embedded data checksum list {str(listing)!r} is missing")
    sums: dict[str, str] = {}
    for line in listing.read_text(encoding="utf-8").splitlines():
        if line.strip():
            digest, _, file_name = line.strip().partition("  ")
            sums[file_name.strip()] = digest.lower()
    return sums


def _verify_embedded(directory: Path) -> None:
    sums = embedded_checksums(directory)
    for stem in IDX_FILES.values():
        file_name = f"{stem}.gz"
        path = directory / file_name
        if file_name not in sums:
            raise DataError(f"no checksum recorded for embedded file {str(path)!r}")
        if not path.is_file():
            raise DataError(f"embedded data file {str(path)!r} is missing; reinstall synbal")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != sums[file_name]:
            raise DataError(
                f"embedded data file {str(path)!r} is corrupt: SHA-256 {digest} does not match "
                f"the recorded {sums[file_name]}; reinstall synbal"
            )


def load_mnist(path: str | os.PathLike[str] | None = None) -> ImageDataset:
    """MNIST from the IDX files in ``path``; ``None`` gives the embedded subset.

    The embedded subset (first 10,000 training and first 2,000 test images of MNIST, see
    ``synbal/data/embedded/README.md``) is checked against its SHA-256 sums before use.

    >>> x, y = load_mnist().subset(100, seed=0).tensors("train")
    >>> tuple(x.shape), x.dtype, 0.0 <= float(x.min()) <= float(x.max()) <= 1.0, y.bincount().tolist()
    ((100, 784), torch.float32, True, [10, 11, 10, 10, 10, 9, 10, 11, 9, 10])
    """
    if path is None:
        _verify_embedded(EMBEDDED_DIR)
        ds = load_idx_dataset(EMBEDDED_DIR, "MNIST")
        return replace(
            ds,
            source="embedded MNIST subset (first 10000 train / first 2000 test images of MNIST, "
            "Y. LeCun, C. Cortes, C. Burges; CC BY-SA 3.0)",
        )
    return load_idx_dataset(path, "MNIST")


def load_fashion_mnist(path: str | os.PathLike[str] | None = None) -> ImageDataset:
    """Fashion-MNIST from the IDX files in ``path`` (default: where Debian's package puts them).

    Here four tiny IDX files stand in for the real ones (same format, 6 training and 3 test images):

    >>> import gzip, os, struct, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> def write_idx(stem, array):
    ...     header = struct.pack(">4B", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    ...     with gzip.open(os.path.join(folder, stem + ".gz"), "wb") as f:
    ...         f.write(header + array.tobytes())
    >>> for split, n in (("train", 6), ("t10k", 3)):
    ...     write_idx(f"{split}-images-idx3-ubyte", np.full((n, 28, 28), 255, np.uint8))
    ...     write_idx(f"{split}-labels-idx1-ubyte", np.arange(n, dtype=np.uint8))
    >>> ds = load_fashion_mnist(folder)
    >>> ds.name, ds.n_train, ds.n_test, ds.test_labels.tolist()
    ('Fashion-MNIST', 6, 3, [0, 1, 2])
    """
    if path is None:
        if not FASHION_MNIST_DEFAULT.is_dir():
            raise DataError(
                f"Fashion-MNIST not found in {str(FASHION_MNIST_DEFAULT)!r}: install it with "
                "'apt-get install dataset-fashion-mnist' (Debian/Ubuntu) or download the four IDX "
                "files from https://github.com/zalandoresearch/fashion-mnist and pass their directory"
            )
        path = FASHION_MNIST_DEFAULT
    return load_idx_dataset(path, "Fashion-MNIST")
