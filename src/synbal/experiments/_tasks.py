"""Data and training tasks the experiments share: MNIST, the CIFAR-10 stand-in, the task builders.

One place for each: :func:`cifar10_standin` (the MNIST digits shaped like CIFAR-10 images, used
by ``fig7-lc``, ``fig8-lc`` and ``fig9-lc`` when no ``--data`` is given),
:func:`training_mnist` and :func:`image_datasets` (MNIST and Fashion-MNIST for ``speed`` and
``quant``), and the two task builders of the arm experiments: :func:`autoencoder_task` (``fig7``,
``fig8``) and :func:`lc_task` (``fig7-lc``, ``fig8-lc``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from torch import nn

from synbal.data import ImageDataset, load_cifar10, load_fashion_mnist, load_mnist
from synbal.errors import DataError, SynbalError
from synbal.experiments._arms import Task
from synbal.experiments._models import DEFAULT_INIT, LC_INIT, lc_cifar_net, mnist_autoencoder
from synbal.experiments._report import ExperimentContext

__all__ = ["DATASETS", "STANDIN", "autoencoder_task", "cifar10_standin", "cifar_or_standin", "image_datasets",
           "lc_task", "mnist_as_cifar", "training_mnist"]

#: How every output names the stand-in (the loaded MNIST's own source follows in brackets).
STANDIN = ("stand-in for CIFAR-10 (no --data given): embedded MNIST digits zero-padded to 32×32 "
           "with 3 identical channels")

#: The image datasets of ``speed`` and ``quant`` (``--set datasets=[...]`` picks among them).
DATASETS = ("MNIST", "Fashion-MNIST")


def mnist_as_cifar(ds: ImageDataset) -> ImageDataset:
    """MNIST-format images as 32×32×3: 2-pixel zero padding, grey copied to 3 channels.

    >>> small = ImageDataset("m", np.ones((2, 28, 28), np.uint8), np.array([0, 1]),
    ...                      np.ones((1, 28, 28), np.uint8), np.array([1]), source="s")
    >>> out = mnist_as_cifar(small)
    >>> out.image_shape, int(out.train_images[0, 0, 0, 0]), int(out.train_images[0, 2, 2, 1])
    ((32, 32, 3), 0, 1)
    """
    def convert(images: np.ndarray) -> np.ndarray:
        padded = np.pad(images, ((0, 0), (2, 2), (2, 2)))
        return np.repeat(padded[..., None], 3, axis=3)

    return ImageDataset(
        name=f"{ds.name} as 32x32x3",
        train_images=convert(ds.train_images),
        train_labels=ds.train_labels,
        test_images=convert(ds.test_images),
        test_labels=ds.test_labels,
        source=f"{STANDIN} ({ds.source})",
    )


def cifar10_standin() -> ImageDataset:
    """The stand-in for CIFAR-10: the embedded MNIST digits as 32×32×3 images, named as such.

    It has CIFAR-10's image shape and ten classes, but is *not* CIFAR-10 (grey digits on black),
    and its ``source`` says so.

    >>> ds = cifar10_standin()
    >>> ds.image_shape, ds.num_classes, ds.source.startswith(STANDIN)
    ((32, 32, 3), 10, True)
    """
    return mnist_as_cifar(load_mnist())


def cifar_or_standin(data: Path | None) -> ImageDataset:
    """CIFAR-10 from ``data`` (its python-format batch files), else :func:`cifar10_standin`.

    >>> cifar_or_standin(None).source.startswith(STANDIN)
    True
    """
    return load_cifar10(data) if data is not None else cifar10_standin()


def training_mnist(ctx: ExperimentContext) -> ImageDataset:
    """MNIST from ``ctx.data`` if given, else the embedded subset; ``--set train_size=N`` subsamples.

    >>> import pathlib
    >>> training_mnist(ExperimentContext(pathlib.Path("."), extra={"train_size": 50})).n_train
    50
    """
    ds = load_mnist(ctx.data)
    size = ctx.extra.get("train_size")
    return ds.subset(int(size), seed=0) if size else ds


def image_datasets(ctx: ExperimentContext, experiment: str) -> tuple[list[tuple[str, ImageDataset]], list[str]]:
    """The datasets named by ``--set datasets=[...]`` (default all of :data:`DATASETS`), and notes.

    MNIST comes from ``--data`` (else the embedded subset), Fashion-MNIST from ``--set fashion=DIR``
    (else its usual locations); a Fashion-MNIST that cannot be found is skipped with a note.

    >>> import pathlib
    >>> sets, notes = image_datasets(ExperimentContext(pathlib.Path("."), extra={"datasets": ["MNIST"]}), "speed")
    >>> [name for name, _ in sets], notes
    (['MNIST'], [])
    """
    wanted = list(ctx.extra.get("datasets", DATASETS))
    unknown = sorted(set(wanted) - set(DATASETS))
    if unknown:
        raise SynbalError(f"{experiment}: unknown dataset(s) {unknown}; choose from {list(DATASETS)}")
    notes = []
    sets = []
    if "MNIST" in wanted:
        sets.append(("MNIST", load_mnist(ctx.data)))
    if "Fashion-MNIST" in wanted:
        try:
            sets.append(("Fashion-MNIST", load_fashion_mnist(ctx.extra.get("fashion"))))
        except DataError as exc:
            notes.append(f"Fashion-MNIST skipped: {exc}")
    return sets, notes


def _image_task(ctx: ExperimentContext, name: str, ds: ImageDataset, model_factory: Callable[[int], nn.Module], *,
                autoencoder: bool, batch_size: int, epochs: int) -> Task:
    """A task on ``ds``'s training images: reconstruct them (sum of squares) or classify them."""
    x, y = ds.tensors("train", flatten=autoencoder)
    return Task(name=name, model_factory=model_factory, train_data=(x, x) if autoencoder else (x, y),
                loss="sse" if autoencoder else "cross_entropy", batch_size=batch_size,
                epochs=int(ctx.extra.get("epochs", epochs)), data_source=ds.source,
                example_inputs=None if autoencoder else x[:2], init=DEFAULT_INIT if autoencoder else LC_INIT)


def autoencoder_task(ctx: ExperimentContext, name: str, *, epochs: int) -> Task:
    """The MNIST autoencoder task (sum of squares, batch 200); ``--set epochs=N`` overrides ``epochs``.

    >>> import pathlib
    >>> task = autoencoder_task(ExperimentContext(pathlib.Path("."), extra={"train_size": 400}), "fig7", epochs=3)
    >>> task.epochs, task.steps_per_epoch, task.loss
    (3, 2, 'sse')
    """
    return _image_task(ctx, name, training_mnist(ctx), lambda seed: mnist_autoencoder(seed=seed), autoencoder=True,
                       batch_size=200, epochs=epochs)


def lc_task(ctx: ExperimentContext, name: str) -> Task:
    """The locally connected net on a stratified training subset, batch 5, cross-entropy.

    ``--set train_size=N`` (default 5000; 500 with ``--quick``) and ``--set epochs=N`` (10; 4).

    >>> import pathlib
    >>> task = lc_task(ExperimentContext(pathlib.Path("."), quick=True, extra={"train_size": 20}), "fig7-lc")
    >>> task.epochs, task.steps_per_epoch, tuple(task.example_inputs.shape)
    (4, 4, (2, 3, 32, 32))
    """
    ds = cifar_or_standin(ctx.data)
    size = int(ctx.extra.get("train_size", 500 if ctx.quick else 5000))
    return _image_task(ctx, name, ds.subset(min(size, ds.n_train), seed=0), lambda seed: lc_cifar_net(seed=seed),
                       autoencoder=False, batch_size=5, epochs=4 if ctx.quick else 10)
