import gzip
import shutil
from collections import Counter

import pytest
import torch

from lstm_mnist.data import (
    DEFAULT_DIRS,
    FILES,
    DataError,
    MNISTDataModule,
    read_idx,
    verify_checksums,
)

# From data/mnist/README.md (shared/data/mnist): facts of the real MNIST.
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
BUNDLED_DIR = DEFAULT_DIRS["mnist"]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(scope="module")
def mnist() -> MNISTDataModule:
    dm = MNISTDataModule(download=False)
    dm.setup()
    return dm


@pytest.fixture
def data_copy(tmp_path):
    dst = tmp_path / "mnist"
    shutil.copytree(BUNDLED_DIR, dst)
    return dst


def test_bundled_files_are_the_real_mnist():
    verify_checksums(BUNDLED_DIR, BUNDLED_DIR / "SHA256SUMS")
    labels = read_idx(BUNDLED_DIR / FILES["train_labels"])
    assert labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert torch.bincount(labels).tolist() == TRAIN_COUNTS
    assert torch.bincount(read_idx(BUNDLED_DIR / FILES["test_labels"])).tolist() == TEST_COUNTS


def test_flipped_byte_is_rejected_with_the_file_name(data_copy):
    victim = data_copy / FILES["train_labels"]
    raw = bytearray(victim.read_bytes())
    raw[100] ^= 0xFF
    victim.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz is corrupt"):
        MNISTDataModule(data_dir=str(data_copy)).setup()


def test_missing_file_is_named(data_copy):
    (data_copy / FILES["test_images"]).unlink()
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz is missing"):
        MNISTDataModule(data_dir=str(data_copy)).setup()


def test_absent_dataset_without_download_says_what_to_do(tmp_path):
    dm = MNISTDataModule("fashion_mnist", data_dir=str(tmp_path / "nowhere"), download=False)
    with pytest.raises(
        DataError, match="does not exist.*apt-get install --reinstall dataset-fashion-mnist"
    ):
        dm.setup()


def test_unknown_dataset_name_lists_the_allowed_ones():
    with pytest.raises(ValueError, match="data.name='kmnist'.*allowed"):
        MNISTDataModule("kmnist")


def test_splits_partition_the_official_sets(mnist):
    train, val, test = (mnist.splits[s] for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (55_000, 5_000, 10_000)

    def images(ds):
        return Counter(img.numpy().tobytes() for img in ds.images)

    official_train = read_idx(BUNDLED_DIR / FILES["train_images"])
    # train + val is exactly the official training set (as a multiset): disjoint and complete.
    assert images(train) + images(val) == Counter(img.numpy().tobytes() for img in official_train)
    assert torch.bincount(torch.cat([train.labels, val.labels])).tolist() == TRAIN_COUNTS
    assert torch.equal(test.images, read_idx(BUNDLED_DIR / FILES["test_images"]))
    assert torch.equal(test.labels, read_idx(BUNDLED_DIR / FILES["test_labels"]))


def test_split_is_fixed_by_its_seed():
    a, b, c = (MNISTDataModule(split_seed=s) for s in (0, 0, 1))
    for dm in (a, b, c):
        dm.setup()
    assert torch.equal(a.splits["val"].labels, b.splits["val"].labels)
    assert not torch.equal(a.splits["val"].labels, c.splits["val"].labels)


def test_batches_are_rows_of_pixels_in_unit_range(mnist):
    x, y = next(iter(mnist.train_dataloader()))
    assert x.shape == (100, 28, 28) and x.dtype == torch.float32
    assert y.shape == (100,) and y.dtype == torch.int64
    assert 0.0 <= x.min() and x.max() <= 1.0 and x.max() > 0.9
    assert sum(len(b[1]) for b in mnist.val_dataloader()) == 5_000
    assert sum(len(b[1]) for b in mnist.test_dataloader()) == 10_000


def test_gz_payload_must_match_header(tmp_path):
    bad = tmp_path / "bad.gz"
    header = bytes([0, 0, 8, 1]) + (10).to_bytes(4, "big")
    bad.write_bytes(gzip.compress(header + bytes(5)))
    with pytest.raises(DataError, match="header promises shape"):
        read_idx(bad)


@pytest.mark.skipif(
    not DEFAULT_DIRS["fashion_mnist"].is_dir(), reason="apt-get install dataset-fashion-mnist"
)
def test_fashion_mnist_from_debian_package():
    dm = MNISTDataModule("fashion_mnist", download=False)
    dm.setup()
    train, val, test = (dm.splits[s] for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (55_000, 5_000, 10_000)
    # Fashion-MNIST is balanced: 6,000 of each class in train, 1,000 in test.
    assert torch.bincount(torch.cat([train.labels, val.labels])).tolist() == [6000] * 10
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    assert not torch.equal(test.images, read_idx(BUNDLED_DIR / FILES["test_images"]))


def test_truncated_file_is_rejected_with_the_file_name(data_copy):
    victim = data_copy / FILES["train_images"]
    victim.write_bytes(victim.read_bytes()[:-1000])
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz is corrupt"):
        MNISTDataModule(data_dir=str(data_copy)).setup()


@pytest.mark.parametrize("device", ["cpu", "auto"])  # auto without a trainer: the CPU
def test_device_option_keeps_the_data_where_asked(device):
    dm = MNISTDataModule(download=False, device=device)
    dm.setup()
    assert all(ds.images.device.type == "cpu" for ds in dm.splits.values())
    x, y = next(iter(dm.train_dataloader()))
    assert x.device.type == "cpu" and y.device.type == "cpu"
    dm.teardown("fit")
    assert all(ds.labels.device.type == "cpu" for ds in dm.splits.values())


def test_unknown_device_is_refused():
    with pytest.raises(ValueError, match="data.device='gpu0' is not a device"):
        MNISTDataModule(device="gpu0")


def test_device_batches_cover_the_split_like_the_host_sampler(mnist):
    # The sampler used for data on a GPU, run here on the CPU: training batches are a shuffled
    # partition (last partial batch dropped), evaluation batches are every sample in order.
    from lstm_mnist.data import DeviceBatchSampler

    ds = mnist.splits["val"]
    train = DeviceBatchSampler(len(ds), 300, shuffle=True, device=torch.device("cpu"))
    batches = list(train)
    assert len(batches) == len(train) == 16
    seen = torch.cat(batches)
    assert len(seen.unique()) == 4800 and not torch.equal(seen, torch.arange(4800))
    evals = DeviceBatchSampler(len(ds), 1000, shuffle=False, device=torch.device("cpu"))
    x, y = zip(*(ds[s] for s in evals), strict=True)
    assert len(evals) == 5 and torch.equal(torch.cat(y), ds.labels)
    assert torch.equal(torch.cat(x), ds.images.float() / 255)
