"""The in-memory image dataset every loader returns.

>>> import numpy as np
>>> ds = ImageDataset("toy", np.zeros((10, 2, 2), np.uint8), np.arange(10) % 2,
...                   np.full((4, 2, 2), 255, np.uint8), np.array([0, 1, 0, 1]), source="made up")
>>> x, y = ds.tensors("test")
>>> tuple(x.shape), float(x.max()), y.dtype
((4, 4), 1.0, torch.int64)
>>> ds.subset(0.5, seed=0).n_train
5
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

import numpy as np

from synbal.errors import DataError

if TYPE_CHECKING:
    import torch

__all__ = ["ImageDataset"]

Split = Literal["train", "test"]


@dataclass(frozen=True)
class ImageDataset:
    """Images as ``uint8`` arrays ``(N, H, W)`` or ``(N, H, W, C)`` with ``int64`` labels.

    ``source`` says where the data came from (a path, the embedded subset, a stand-in); the
    reproductions copy it into every output.

    >>> import numpy as np
    >>> colour = ImageDataset("toy", np.zeros((6, 4, 4, 3), np.uint8), np.arange(6) % 3,
    ...                       np.zeros((3, 4, 4, 3), np.uint8), np.arange(3), source="made up")
    >>> colour.image_shape, colour.num_classes, tuple(colour.tensors("test", flatten=False)[0].shape)
    ((4, 4, 3), 3, (3, 3, 4, 4))
    """

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            images = getattr(self, f"{split}_images")
            labels = getattr(self, f"{split}_labels")
            if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim not in (3, 4):
                raise DataError(
                    f"{self.name}: {split} images must be a uint8 array (N, H, W) or (N, H, W, C)"
                )
            labels = np.asarray(labels)
            if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
                raise DataError(
                    f"{self.name}: {labels.shape[0] if labels.ndim else 0} {split} labels for "
                    f"{images.shape[0]} images"
                )
            if labels.size and labels.min() < 0:
                raise DataError(f"{self.name}: negative {split} label {int(labels.min())}")
            object.__setattr__(self, f"{split}_labels", labels.astype(np.int64, copy=False))
        if self.train_images.shape[1:] != self.test_images.shape[1:]:
            raise DataError(
                f"{self.name}: train images {self.train_images.shape[1:]} and test images "
                f"{self.test_images.shape[1:]} differ in shape"
            )

    @property
    def n_train(self) -> int:
        return int(self.train_images.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.test_images.shape[0])

    @property
    def image_shape(self) -> tuple[int, ...]:
        """``(H, W)`` or ``(H, W, C)``."""
        return tuple(int(s) for s in self.train_images.shape[1:])

    @property
    def num_classes(self) -> int:
        return int(max(self.train_labels.max(initial=-1), self.test_labels.max(initial=-1)) + 1)

    def arrays(self, split: Split = "train") -> tuple[np.ndarray, np.ndarray]:
        """The raw ``(images, labels)`` of one split."""
        if split not in ("train", "test"):
            raise DataError(f"split must be 'train' or 'test', got {split!r}")
        return getattr(self, f"{split}_images"), getattr(self, f"{split}_labels")

    def tensors(
        self, split: Split = "train", *, flatten: bool = True, dtype: torch.dtype | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)`` torch tensors: pixels scaled to ``[0, 1]`` (``float32`` by default).

        Colour images become channels-first ``(N, C, H, W)``; ``flatten=True`` then gives
        ``(N, C·H·W)`` in that order (CIFAR-10's own layout), grey images ``(N, H·W)``.
        """
        import torch

        images, labels = self.arrays(split)
        x = torch.from_numpy(np.ascontiguousarray(images)).to(dtype or torch.float32) / 255.0
        if x.ndim == 4:
            x = x.permute(0, 3, 1, 2).contiguous()
        if flatten:
            x = x.reshape(x.shape[0], -1)
        return x, torch.from_numpy(labels.copy())

    def subset(self, size: float | int, seed: int = 0, *, stratified: bool = True) -> ImageDataset:
        """A random part of the *training* set (the test set is kept whole).

        ``size`` is a fraction in ``(0, 1]`` (a ``float``) or a number of examples (an ``int``).
        ``stratified=True`` keeps the class proportions (largest-remainder rounding, so the
        subset has exactly the requested size).
        """
        n = self.n_train
        if isinstance(size, bool) or not isinstance(size, (int, float, np.integer, np.floating)):
            raise DataError(f"subset size must be a fraction or a count, got {size!r}")
        if isinstance(size, (float, np.floating)):
            if not 0.0 < size <= 1.0:
                raise DataError(f"subset fraction must be in (0, 1], got {size}")
            count = max(1, round(float(size) * n))
        else:
            count = int(size)
            if not 1 <= count <= n:
                raise DataError(f"subset count must be between 1 and {n}, got {count}")
        rng = np.random.default_rng(seed)
        if stratified:
            classes, counts = np.unique(self.train_labels, return_counts=True)
            quota = counts * count / n
            take = np.floor(quota).astype(np.int64)
            # largest remainders get the leftover examples, so the total is exactly ``count``
            take[np.argsort(take - quota, kind="stable")[: count - int(take.sum())]] += 1
            chosen = [
                rng.choice(np.flatnonzero(self.train_labels == c), size=int(k), replace=False)
                for c, k in zip(classes, take, strict=True)
            ]
            index = np.sort(np.concatenate(chosen))
        else:
            index = np.sort(rng.choice(n, size=count, replace=False))
        return replace(
            self,
            train_images=self.train_images[index],
            train_labels=self.train_labels[index],
            source=f"{self.source}; training subset of {index.size} (seed {seed})",
        )
