"""MNIST-format datasets as in-memory uint8 tensors, split train/val/test.

The four gzipped IDX files of MNIST ship with the repository (data/mnist) and the installed
package (lstm_mnist/bundled/data/mnist), so training needs no network; Fashion-MNIST is read
from Debian's `dataset-fashion-mnist` package. Each image is a sequence of 28 rows of 28 pixels
in [0, 1].

With `device` set to a GPU (or "auto" under a GPU trainer) the whole dataset (55 MB of uint8) is
copied to the GPU once and batches are gathered there: no loader workers, no host-to-device copy
per step.
"""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    RandomSampler,
    Sampler,
    SequentialSampler,
)

from lstm_mnist.resources import DATA_DIR
from lstm_mnist.resumable import ResumableBatches, ResumableLoader

# Where each dataset is read from by default (schema.DATASETS names them for the config checks).
# Debian's Fashion-MNIST ships no checksums, so the expected ones live in the repository
# (data/fashion_mnist/SHA256SUMS).
DEFAULT_DIRS = {
    "mnist": DATA_DIR / "mnist",
    "fashion_mnist": Path("/usr/share/datasets/fashion-mnist"),
}
HOW_TO_RESTORE = {
    "mnist": "restore it with `git checkout -- data/mnist`",
    "fashion_mnist": "reinstall it with `apt-get install --reinstall dataset-fashion-mnist`",
}
FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


class DataError(RuntimeError):
    """A dataset file is missing, corrupt or unreadable."""


def verify_checksums(data_dir: Path, sums_file: Path, fix: str = "replace it") -> None:
    """Check every IDX file in `data_dir` against `sums_file`; raise DataError naming the file
    and, in `fix`, what to do about it."""
    if not sums_file.is_file():
        raise DataError(f"{sums_file} is missing; it lists the expected SHA-256 of each data file")
    expected = {}
    for line in sums_file.read_text().splitlines():
        if line.strip():
            digest, name = line.split()
            expected[name.lstrip("*")] = digest
    for name in FILES.values():
        path = data_dir / name
        if not path.is_file():
            raise DataError(f"{path} is missing; {fix}")
        if name not in expected:
            raise DataError(f"{sums_file} has no checksum for {name}")
        if hashlib.sha256(path.read_bytes()).hexdigest() != expected[name]:
            raise DataError(f"{path} is corrupt (SHA-256 mismatch); {fix}")


def read_idx(path: Path) -> torch.Tensor:
    """Decode one gzipped IDX file (uint8 payload) into a tensor of its declared shape."""
    raw = gzip.decompress(path.read_bytes())
    if raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise DataError(f"{path} is not a uint8 IDX file")
    ndim = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    payload = raw[4 + 4 * ndim :]
    if len(payload) != torch.Size(shape).numel():
        raise DataError(f"{path} holds {len(payload)} bytes, its header promises shape {shape}")
    return torch.frombuffer(bytearray(payload), dtype=torch.uint8).reshape(shape)


def load_idx_dir(data_dir: Path, sums_file: Path, fix: str) -> dict[str, torch.Tensor]:
    verify_checksums(data_dir, sums_file, fix)
    return {key: read_idx(data_dir / name) for key, name in FILES.items()}


def download_with_torchvision(name: str, root: Path) -> dict[str, torch.Tensor]:
    from torchvision import datasets

    cls = {"mnist": datasets.MNIST, "fashion_mnist": datasets.FashionMNIST}[name]
    try:
        train, test = (cls(str(root), train=t, download=True) for t in (True, False))
    except Exception as err:  # torchvision raises several kinds on a failed download
        raise DataError(
            f"{name}: downloading through torchvision into {root} failed: {err}"
        ) from err
    return {
        "train_images": train.data,
        "train_labels": train.targets,
        "test_images": test.data,
        "test_labels": test.targets,
    }


class BatchedTensorDataset(Dataset):
    """Indexed by a batch of sample indices (a list, an index tensor on the data's device, or a
    slice), it returns a whole batch: one gather per batch, on the device the data is on."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels.long()

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device) -> None:
        """Move the images and labels to `device` (in place; loaders already made see it)."""
        self.images, self.labels = self.images.to(device), self.labels.to(device)

    def __getitem__(
        self, indices: list[int] | torch.Tensor | slice
    ) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(indices) if isinstance(indices, list) else indices
        return self.images[idx].float().div_(255), self.labels[idx]


class DeviceBatchSampler:
    """Index batches drawn on the data's device: for training one `randperm` there per epoch,
    cut into batches (the last partial one dropped); for evaluation plain slices in order. Either
    way no index crosses from the host to the device per step.

    Under DDP (`world` > 1) rank `rank` takes every world-th sample of the same permutation
    (every rank draws it from the same seeded stream), cut to equal lengths: each rank the same
    number of steps. Evaluation shards are strided too, uneven by at most one: every sample once.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        shuffle: bool,
        device: torch.device,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        self.n, self.batch_size, self.shuffle, self.device = n, batch_size, shuffle, device
        self.rank, self.world = rank, world

    def __len__(self) -> int:
        if self.shuffle:
            return self.n // self.world // self.batch_size
        return -(-len(range(self.rank, self.n, self.world)) // self.batch_size)

    def __iter__(self):
        if not self.shuffle:
            if self.world == 1:
                yield from (
                    slice(i, i + self.batch_size) for i in range(0, self.n, self.batch_size)
                )
                return
            shard = torch.arange(self.rank, self.n, self.world, device=self.device)
            yield from shard.split(self.batch_size)
            return
        full = len(self) * self.batch_size
        # The device's default generator: seeded by seed_everything like the CPU sampler's.
        perm = torch.randperm(self.n, device=self.device)
        perm = perm[: self.n // self.world * self.world][self.rank :: self.world]
        yield from perm[:full].reshape(-1, self.batch_size)


class ShardOf(Sampler):
    """Rank `rank`'s share of the indices `sampler` yields: every world-th, from the rank-th;
    `equal` cuts the shards to one length (training: each rank the same number of steps)."""

    def __init__(self, sampler: Sampler, rank: int, world: int, equal: bool) -> None:
        self.sampler, self.rank, self.world, self.equal = sampler, rank, world, equal

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.world if self.equal else len(range(self.rank, n, self.world))

    def __iter__(self) -> Iterator[int]:
        indices = list(self.sampler)
        if self.equal:
            indices = indices[: len(indices) // self.world * self.world]
        return iter(indices[self.rank :: self.world])


class MNISTDataModule(pl.LightningDataModule):
    """MNIST (or Fashion-MNIST): train/val carved from the official training set, official test.

    data_dir: a folder with the four gzipped IDX files, checked against its own SHA256SUMS if it
    has one, else against data/<name>/SHA256SUMS; default the bundled MNIST or Debian's
    Fashion-MNIST. If it does not exist and `download` is true, torchvision downloads
    the dataset into `download_dir` instead.

    device: where the decoded tensors live, and so where batches come out, between `setup` and
    `teardown`: "cpu" (default), a torch device such as "cuda" or "cuda:1", or "auto": the device
    of the Trainer that calls `setup` (so the GPU under `trainer=gpu`), cpu when called without
    one. `teardown` (which the Trainer calls at the end of fit/validate/test, when it also moves
    the model back to the CPU) moves them back to the CPU, so code that uses the loaders after
    training sees CPU tensors as before. On the CPU nothing is copied or changed.
    """

    def __init__(
        self,
        name: str = "mnist",
        data_dir: str | None = None,
        download: bool = True,
        download_dir: str = "data/downloads",
        batch_size: int = 100,
        eval_batch_size: int = 1000,
        val_size: int = 5000,
        split_seed: int = 0,
        device: str = "cpu",
    ) -> None:
        super().__init__()
        if name not in DEFAULT_DIRS:
            raise ValueError(
                f"data.name={name!r} is not a known dataset; allowed: {list(DEFAULT_DIRS)}"
            )
        if device != "auto":
            try:
                torch.device(device)
            except (RuntimeError, TypeError) as err:
                raise ValueError(
                    f"data.device={device!r} is not a device; allowed: auto, cpu, cuda, cuda:N"
                ) from err
        self.device = device
        self.name = name
        self.data_dir = Path(data_dir) if data_dir else DEFAULT_DIRS[name]
        self.download, self.download_dir = download, Path(download_dir)
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.val_size, self.split_seed = val_size, split_seed
        self.splits: dict[str, BatchedTensorDataset] = {}

    def load(self) -> dict[str, torch.Tensor]:
        if self.data_dir.is_dir():
            own_sums = self.data_dir / "SHA256SUMS"
            sums = own_sums if own_sums.is_file() else DATA_DIR / self.name / "SHA256SUMS"
            default = self.data_dir == DEFAULT_DIRS[self.name]
            return load_idx_dir(
                self.data_dir, sums, HOW_TO_RESTORE[self.name] if default else "replace it"
            )
        if self.download:
            return download_with_torchvision(self.name, self.download_dir)
        raise DataError(
            f"{self.name}: {self.data_dir} does not exist and data.download=false; "
            + HOW_TO_RESTORE[self.name]
        )

    def target_device(self) -> torch.device:
        """The device the data goes to at `setup` (see `device` in the class docstring)."""
        if self.device != "auto":
            return torch.device(self.device)
        return self.trainer.strategy.root_device if self.trainer else torch.device("cpu")

    def setup(self, stage: str | None = None) -> None:
        if not self.splits:
            self._load_splits()
        device = self.target_device()
        for ds in self.splits.values():
            ds.to(device)

    def teardown(self, stage: str | None = None) -> None:
        for ds in self.splits.values():
            ds.to(torch.device("cpu"))

    def _load_splits(self) -> None:
        t = self.load()
        n_train = len(t["train_labels"])
        if not 0 < self.val_size < n_train:
            raise ValueError(f"data.val_size={self.val_size} must be between 1 and {n_train - 1}")
        # A fixed permutation of the official training set: the same val split for every run.
        perm = torch.randperm(n_train, generator=torch.Generator().manual_seed(self.split_seed))
        val_idx, train_idx = perm[: self.val_size], perm[self.val_size :]
        if not 1 <= self.batch_size <= len(train_idx):  # else not one training step is taken
            raise ValueError(
                f"batch_size={self.batch_size} is larger than the training split:"
                f" must be an integer in [1, {len(train_idx)}]"
            )
        self.splits = {
            "train": BatchedTensorDataset(
                t["train_images"][train_idx], t["train_labels"][train_idx]
            ),
            "val": BatchedTensorDataset(t["train_images"][val_idx], t["train_labels"][val_idx]),
            "test": BatchedTensorDataset(t["test_images"], t["test_labels"]),
        }

    def _loader(
        self, split: str, batch_size: int, shuffle: bool, sharded: bool = True
    ) -> DataLoader:
        ds = self.splits[split]
        trainer = self.trainer if sharded else None
        rank, world = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        if ds.images.device.type == "cpu":
            sampler = RandomSampler(ds) if shuffle else SequentialSampler(ds)
            if world > 1:
                sampler = ShardOf(sampler, rank, world, equal=shuffle)
            batches = BatchSampler(sampler, batch_size, drop_last=shuffle)
        else:
            batches = DeviceBatchSampler(
                len(ds), batch_size, shuffle, ds.images.device, rank, world
            )
        # batch_size=None: the sampler yields whole index batches and the dataset gathers them,
        # in this process (no workers: the data is in memory, on the device it is used on).
        if shuffle and trainer is not None:  # training: resumable mid-epoch, exactly
            return ResumableLoader(ds, sampler=ResumableBatches(batches, self), batch_size=None)
        return DataLoader(ds, sampler=batches, batch_size=None)

    def whole_split(self, split: str) -> DataLoader:
        """The whole split in order, in this process, whichever rank it is (for the test report
        and the exported model's example after training)."""
        return self._loader(split, self.eval_batch_size, shuffle=False, sharded=False)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size, shuffle=False)
