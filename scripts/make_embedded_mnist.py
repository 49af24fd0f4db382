"""Regenerate the embedded MNIST subset shipped in ``src/synbal/data/embedded/``.

Usage: ``python scripts/make_embedded_mnist.py /path/to/mnist [--train 10000 --test 2000]``

Takes the *first* N training and first M test images of the full MNIST (the order of the
official files; the first 10,000 training images hold 1,001 zeros … 978 nines, close to the
full set's class proportions), writes them as IDX ``.gz`` files with reproducible gzip headers,
and records their SHA-256 in ``SHA256SUMS``, which :func:`synbal.data.load_mnist` verifies.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np

from synbal._io import atomic_write_text
from synbal.data._idx import write_idx
from synbal.data._mnist import EMBEDDED_DIR, IDX_FILES, load_idx_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="directory with the four full MNIST IDX .gz files")
    parser.add_argument("--train", type=int, default=10_000)
    parser.add_argument("--test", type=int, default=2_000)
    parser.add_argument("--out", type=Path, default=EMBEDDED_DIR)
    args = parser.parse_args()
    full = load_idx_dataset(args.source, "MNIST")
    arrays = {
        "train_images": full.train_images[: args.train],
        "train_labels": full.train_labels[: args.train].astype(np.uint8),
        "test_images": full.test_images[: args.test],
        "test_labels": full.test_labels[: args.test].astype(np.uint8),
    }
    lines = []
    for key, stem in IDX_FILES.items():
        path = args.out / f"{stem}.gz"
        write_idx(path, arrays[key])
        lines.append(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.name}")
        print(f"wrote {path} {arrays[key].shape}")
    atomic_write_text(args.out / "SHA256SUMS", "\n".join(lines) + "\n")
    counts = np.bincount(arrays["train_labels"], minlength=10)
    print("train class counts:", counts.tolist())


if __name__ == "__main__":
    main()
