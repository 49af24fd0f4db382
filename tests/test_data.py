"""Dataset loaders: IDX (MNIST, Fashion-MNIST, embedded subset), CIFAR-10 batches, ImageDataset."""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import synbal.data._mnist as mnist_module
from synbal.data import ImageDataset, load_cifar10, load_fashion_mnist, load_mnist
from synbal.data._cifar import read_cifar_batch
from synbal.data._idx import read_idx, write_idx
from synbal.data._mnist import IDX_FILES, load_idx_dataset
from synbal.errors import DataError

FULL_MNIST = Path("/work/shared/data/mnist")


def _write_fake_mnist(root: Path, n_train: int = 30, n_test: int = 10, seed: int = 0) -> ImageDataset:
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": (np.arange(n_train) % 10).astype(np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": (np.arange(n_test) % 10).astype(np.uint8),
    }
    for key, stem in IDX_FILES.items():
        write_idx(root / f"{stem}.gz", arrays[key])
    return ImageDataset("fake", arrays["train_images"], arrays["train_labels"],
                        arrays["test_images"], arrays["test_labels"], source="test")


# ----------------------------------------------------------------------------- IDX

def test_idx_round_trip_and_reproducible_bytes(tmp_path: Path) -> None:
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a.gz", arr)
    write_idx(tmp_path / "b.gz", arr)
    assert (tmp_path / "a.gz").read_bytes() == (tmp_path / "b.gz").read_bytes()
    np.testing.assert_array_equal(read_idx(tmp_path / "a.gz", ndim=3), arr)
    write_idx(tmp_path / "plain", arr)
    np.testing.assert_array_equal(read_idx(tmp_path / "plain", ndim=3), arr)


def test_idx_rejects_bad_magic_wrong_dims_and_sizes(tmp_path: Path) -> None:
    path = tmp_path / "x-idx3-ubyte"
    path.write_bytes(b"\x01\x02\x08\x03" + b"\x00" * 12)
    with pytest.raises(DataError, match="magic"):
        read_idx(path, ndim=3)
    write_idx(path, np.zeros((2, 2), np.uint8))
    with pytest.raises(DataError, match="2 dimensions"):
        read_idx(path, ndim=3)
    write_idx(path, np.zeros((2, 2, 2), np.uint8))
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(DataError, match="holds 7 bytes"):
        read_idx(path, ndim=3)
    path.write_bytes(path.read_bytes() + b"\x00\x00")
    with pytest.raises(DataError, match=str(path.name)):
        read_idx(path, ndim=3)


def test_truncated_gzip_names_the_file(tmp_path: Path) -> None:
    _write_fake_mnist(tmp_path)
    target = tmp_path / "train-images-idx3-ubyte.gz"
    target.write_bytes(target.read_bytes()[:500])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz.*truncated"):
        load_mnist(tmp_path)


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    _write_fake_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.gz.*missing"):
        load_mnist(tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        load_mnist(tmp_path / "nowhere")


def test_count_mismatch_and_bad_labels(tmp_path: Path) -> None:
    _write_fake_mnist(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(29, np.uint8))
    with pytest.raises(DataError, match=r"30 images but .* 29 labels"):
        load_mnist(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.full(30, 12, np.uint8))
    with pytest.raises(DataError, match="label 12"):
        load_mnist(tmp_path)


def test_wrong_image_shape(tmp_path: Path) -> None:
    _write_fake_mnist(tmp_path)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((10, 32, 32), np.uint8))
    with pytest.raises(DataError, match=r"\(32, 32\)"):
        load_mnist(tmp_path)


def test_user_path_loads_exact_arrays(tmp_path: Path) -> None:
    expected = _write_fake_mnist(tmp_path)
    ds = load_mnist(tmp_path)
    np.testing.assert_array_equal(ds.train_images, expected.train_images)
    np.testing.assert_array_equal(ds.test_labels, expected.test_labels)
    assert ds.train_labels.dtype == np.int64 and str(tmp_path) in ds.source


# ----------------------------------------------------------------------------- embedded

def test_embedded_subset_shape_and_source() -> None:
    ds = load_mnist()
    assert (ds.n_train, ds.n_test, ds.image_shape) == (10_000, 2_000, (28, 28))
    assert np.bincount(ds.train_labels).tolist() == [1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978]
    assert "CC BY-SA 3.0" in ds.source and "LeCun" in ds.source


def test_embedded_checksums_match_files() -> None:
    sums = mnist_module.embedded_checksums()
    assert set(sums) == {f"{stem}.gz" for stem in IDX_FILES.values()}
    for name, digest in sums.items():
        assert hashlib.sha256((mnist_module.EMBEDDED_DIR / name).read_bytes()).hexdigest() == digest


def test_embedded_corruption_is_detected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy = tmp_path / "embedded"
    shutil.copytree(mnist_module.EMBEDDED_DIR, copy)
    target = copy / "t10k-labels-idx1-ubyte.gz"
    os.chmod(target, 0o644)
    data = bytearray(target.read_bytes())
    data[-20] ^= 0xFF
    target.write_bytes(bytes(data))
    monkeypatch.setattr(mnist_module, "EMBEDDED_DIR", copy)
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.gz.? is corrupt"):
        load_mnist()


@pytest.mark.skipif(not FULL_MNIST.is_dir(), reason="full MNIST not available")
def test_full_mnist_and_embedded_is_its_prefix() -> None:
    full = load_mnist(FULL_MNIST)
    assert (full.n_train, full.n_test) == (60_000, 10_000)
    small = load_mnist()
    np.testing.assert_array_equal(small.train_images, full.train_images[:10_000])
    np.testing.assert_array_equal(small.test_labels, full.test_labels[:2_000])


def test_fashion_mnist_default_or_install_hint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    if mnist_module.FASHION_MNIST_DEFAULT.is_dir():
        ds = load_fashion_mnist()
        assert (ds.n_train, ds.n_test, ds.name) == (60_000, 10_000, "Fashion-MNIST")
    monkeypatch.setattr(mnist_module, "FASHION_MNIST_DEFAULT", tmp_path / "absent")
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist()
    _write_fake_mnist(tmp_path / "f")
    assert load_fashion_mnist(tmp_path / "f").name == "Fashion-MNIST"
    assert load_idx_dataset(tmp_path / "f", "X").n_test == 10


# ----------------------------------------------------------------------------- CIFAR-10

def _cifar_batch(n: int, seed: int) -> dict[bytes, object]:
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": b"testing batch",
        b"labels": [int(v) for v in rng.integers(0, 10, n)],
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [b"img%d.png" % i for i in range(n)],
    }


def _write_cifar(root: Path, n: int = 6, protocol: int = 2) -> dict[str, dict[bytes, object]]:
    root.mkdir(parents=True, exist_ok=True)
    batches = {}
    for i, name in enumerate([*(f"data_batch_{k}" for k in range(1, 6)), "test_batch"]):
        batches[name] = _cifar_batch(n, seed=i)
        (root / name).write_bytes(pickle.dumps(batches[name], protocol=protocol))
    return batches


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_cifar_loads_generated_batches(tmp_path: Path, protocol: int) -> None:
    batches = _write_cifar(tmp_path / "cifar-10-batches-py", protocol=protocol)
    ds = load_cifar10(tmp_path)  # the parent directory works too
    assert (ds.n_train, ds.n_test, ds.image_shape) == (30, 6, (32, 32, 3))
    first = batches["data_batch_1"]
    assert isinstance(first[b"data"], np.ndarray)
    # channel-major rows: the red plane comes first
    np.testing.assert_array_equal(ds.train_images[0, :, :, 0].reshape(-1), first[b"data"][0, :1024])
    np.testing.assert_array_equal(ds.train_labels[:6], first[b"labels"])
    x, _ = ds.tensors("train")
    np.testing.assert_allclose(x[0].numpy() * 255.0, first[b"data"][0].astype(np.float32), atol=1e-3)
    xc, _ = ds.tensors("test", flatten=False)
    assert tuple(xc.shape) == (6, 3, 32, 32)


def test_cifar_refuses_malicious_pickle(tmp_path: Path) -> None:
    _write_cifar(tmp_path)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, (f"touch {marker}",))

    (tmp_path / "data_batch_3").write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}))
    with pytest.raises(DataError, match=r"data_batch_3.*refusing to unpickle"):
        load_cifar10(tmp_path)
    assert not marker.exists()


def test_cifar_bad_shape_truncated_and_missing(tmp_path: Path) -> None:
    _write_cifar(tmp_path)
    bad = _cifar_batch(4, 0)
    bad[b"data"] = np.zeros((4, 100), np.uint8)
    (tmp_path / "test_batch").write_bytes(pickle.dumps(bad, protocol=2))
    with pytest.raises(DataError, match=r"test_batch.*\(N, 3072\)"):
        load_cifar10(tmp_path)
    good = pickle.dumps(_cifar_batch(4, 0), protocol=2)
    (tmp_path / "test_batch").write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match=r"test_batch.*truncated"):
        read_cifar_batch(tmp_path / "test_batch")
    bad = _cifar_batch(4, 0)
    bad[b"labels"] = [1, 2, 3]
    (tmp_path / "test_batch").write_bytes(pickle.dumps(bad, protocol=2))
    with pytest.raises(DataError, match="3 labels for 4 images"):
        load_cifar10(tmp_path)
    (tmp_path / "data_batch_5").unlink()
    with pytest.raises(DataError, match=r"data_batch_5.*missing"):
        load_cifar10(tmp_path)


# ----------------------------------------------------------------------------- ImageDataset

def test_tensors_scaling_and_shapes() -> None:
    ds = load_mnist()
    x, y = ds.tensors("train")
    assert x.dtype == torch.float32 and tuple(x.shape) == (10_000, 784)
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0 and y.dtype == torch.int64
    x2, _ = ds.tensors("test", flatten=False, dtype=torch.float64)
    assert tuple(x2.shape) == (2_000, 28, 28) and x2.dtype == torch.float64
    with pytest.raises(DataError, match="split"):
        ds.tensors("valid")  # type: ignore[arg-type]


def test_subset_fraction_count_stratified_deterministic() -> None:
    ds = load_mnist()
    a = ds.subset(0.01, seed=3)
    b = ds.subset(0.01, seed=3)
    c = ds.subset(0.01, seed=4)
    np.testing.assert_array_equal(a.train_labels, b.train_labels)
    assert not np.array_equal(a.train_images, c.train_images)
    assert abs(a.n_train - 100) <= 5 and sorted(set(a.train_labels.tolist())) == list(range(10))
    assert a.n_test == ds.n_test and "subset" in a.source
    assert ds.subset(37, seed=0, stratified=False).n_train == 37
    for bad in (0.0, 1.5, 0, 10_001, "half", True):
        with pytest.raises(DataError):
            ds.subset(bad)  # type: ignore[arg-type]


def test_dataset_validation() -> None:
    with pytest.raises(DataError, match="uint8"):
        ImageDataset("x", np.zeros((2, 2, 2)), np.zeros(2), np.zeros((1, 2, 2), np.uint8), np.zeros(1), "s")
    with pytest.raises(DataError, match="3 train labels for 2 images"):
        ImageDataset("x", np.zeros((2, 2, 2), np.uint8), np.zeros(3), np.zeros((1, 2, 2), np.uint8),
                     np.zeros(1), "s")
    with pytest.raises(DataError, match="differ in shape"):
        ImageDataset("x", np.zeros((2, 2, 2), np.uint8), np.zeros(2), np.zeros((1, 3, 2), np.uint8),
                     np.zeros(1), "s")


def test_gzip_module_truncation_detected_directly(tmp_path: Path) -> None:
    path = tmp_path / "y.gz"
    with gzip.open(path, "wb") as fh:
        fh.write(b"\x00\x00\x08\x01" + np.array([5], ">u4").tobytes() + bytes(range(5)))
    assert read_idx(path, ndim=1).tolist() == [0, 1, 2, 3, 4]
    path.write_bytes(path.read_bytes()[:-6])
    with pytest.raises(DataError, match=r"y.gz"):
        read_idx(path, ndim=1)
