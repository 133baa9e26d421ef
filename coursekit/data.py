"""Datasets as uint8 tensors, cached once, and batches cut and augmented on the device.

Sources for ``dataset``:
* "cifar10": ``<data_dir>/cifar10`` in the ImageFolder layout
  (``train/<class>/*``, ``test/<class>/*``) or in torchvision's own format
  (``cifar-10-batches-py``); otherwise torchvision downloads it there.
* "imagefolder:PATH": any folder with ``train/`` and ``test/`` (or ``val/``),
  one sub-folder per class; images are resized to ``image_size``.

Decoded images are cached as one uint8 file in the cache folder
(COURSEKIT_CACHE, by default ``~/.cache/coursekit``), never inside a dataset
folder. Introduced in notebooks/00_baseline.ipynb.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .batching import epoch_order
from .files import save_torch_atomic
from .paths import cache_dir, default_data_dir  # the data-dir rules live in paths; data re-exports them
from .validate import fraction

__all__ = [
    "DataSplits",
    "Batches",
    "load_data",
    "default_data_dir",
    "cache_dir",
    "parse_dataset",
    "augment_batch",
]

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def parse_dataset(dataset: str) -> tuple[str, Path | None]:
    """Split "cifar10" / "imagefolder:PATH" into (kind, path); raise on anything else."""
    if dataset == "cifar10":
        return "cifar10", None
    if isinstance(dataset, str) and dataset.startswith("imagefolder:") and len(dataset) > len("imagefolder:"):
        return "imagefolder", Path(dataset[len("imagefolder:"):]).expanduser()
    raise ValueError(f"dataset: {dataset!r} is not allowed; use 'cifar10' or 'imagefolder:PATH'")


# ----------------------------------------------------------------------------- reading

def _list_imagefolder(split_dir: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    classes = sorted(d.name for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith("."))
    files = []
    for label, name in enumerate(classes):
        for f in sorted((split_dir / name).iterdir()):
            if f.suffix.lower() in IMAGE_SUFFIXES:
                files.append((f, label))
    return classes, files


def _decode(path: Path, size: int | None) -> torch.Tensor:
    """One image file -> (3, H, W) uint8 RGB, resized (antialiased) to size x size when given."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        if size is not None and im.size != (size, size):
            im = im.resize((size, size), Image.BILINEAR)
        return torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).contiguous()


def _read_imagefolder_split(split_dir: Path, size: int | None) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    classes, files = _list_imagefolder(split_dir)
    if not files:
        raise ValueError(f"no images found under {split_dir} (expected {split_dir}/<class>/<image>)")
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        images = list(pool.map(lambda f: _decode(f[0], size), files, chunksize=256))
    shapes = {tuple(i.shape) for i in images}
    if len(shapes) > 1:
        raise ValueError(f"images under {split_dir} have different sizes {sorted(shapes)[:3]}...; pass image_size")
    x = torch.stack(images)  # (N, 3, H, W) uint8
    y = torch.tensor([label for _, label in files], dtype=torch.int64)
    return x, y, classes


def _fingerprint(root: Path, extra: dict) -> str:
    """Hash of the file list (names, sizes, mtimes) under root plus ``extra``: the cache key."""
    h = hashlib.sha256(json.dumps(extra, sort_keys=True).encode())
    h.update(str(root.resolve()).encode())
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            st = os.stat(os.path.join(dirpath, name))
            h.update(f"{os.path.relpath(os.path.join(dirpath, name), root)}:{st.st_size}:{int(st.st_mtime)}".encode())
    return h.hexdigest()[:16]


def _channel_stats(train_x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of (N, 3, H, W) uint8 images scaled to [0, 1], over every image and pixel: (3,), (3,)."""
    x = train_x.float().div(255)
    return x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3))


def _cached(key: str, build) -> dict:
    """The decoded dataset under ``key`` in the cache folder, built once, with its training images' channel
    statistics kept beside them ("train_mean", "train_std": a second per load otherwise, on CIFAR-10's 50,000)."""
    path = cache_dir() / f"{key}.pt"
    data = torch.load(path, weights_only=True) if path.exists() else build()
    if "train_mean" not in data:  # built now, or cached before the statistics were kept
        data["train_mean"], data["train_std"] = _channel_stats(data["train_x"])
        save_torch_atomic(data, path)  # a half-written cache is never read
    return data


def _read_imagefolder(root: Path, size: int | None, name: str) -> dict:
    if not (root / "train").is_dir():
        raise ValueError(f"dataset: {root} has no train/ folder; an imagefolder dataset needs train/<class>/ and test/ or val/")
    held_out = next((root / s for s in ("test", "val") if (root / s).is_dir()), None)
    if held_out is None:
        raise ValueError(f"dataset: {root} has train/ but neither test/ nor val/; add one of them for held-out evaluation")

    def build():
        xtr, ytr, classes = _read_imagefolder_split(root / "train", size)
        xte, yte, classes_te = _read_imagefolder_split(held_out, size)
        if classes_te != classes:
            raise ValueError(f"dataset: class folders differ between {root}/train and {held_out}: {classes} vs {classes_te}")
        return {"train_x": xtr, "train_y": ytr, "test_x": xte, "test_y": yte, "classes": classes}

    return _cached(f"{name}-{_fingerprint(root, {'size': size, 'v': 1})}", build)


def _read_torchvision_cifar10(root: Path, download: bool) -> dict:
    from torchvision.datasets import CIFAR10

    def split(train: bool):
        ds = CIFAR10(str(root), train=train, download=download)
        return torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(ds.targets, dtype=torch.int64)

    def build():
        xtr, ytr = split(True)
        xte, yte = split(False)
        return {"train_x": xtr, "train_y": ytr, "test_x": xte, "test_y": yte, "classes": list(CIFAR10_CLASSES)}

    return _cached(f"cifar10-torchvision-{_fingerprint(root / 'cifar-10-batches-py', {'v': 1})}", build)


def _read_cifar10(data_dir: Path) -> dict:
    root = data_dir / "cifar10"
    if (root / "train").is_dir():
        data = _read_imagefolder(root, None, "cifar10-imagefolder")
        if list(data["classes"]) != list(CIFAR10_CLASSES):
            raise ValueError(f"dataset: {root}/train holds classes {data['classes']}, not CIFAR-10's {list(CIFAR10_CLASSES)}")
        return data
    if (root / "cifar-10-batches-py").is_dir():
        return _read_torchvision_cifar10(root, download=False)
    try:
        root.mkdir(parents=True, exist_ok=True)
        return _read_torchvision_cifar10(root, download=True)
    except Exception as err:  # no network, or a read-only data dir
        raise FileNotFoundError(
            f"CIFAR-10 not found and could not be downloaded ({type(err).__name__}: {err}). "
            f"Looked for {root}/train/<class>/ (ImageFolder layout) and {root}/cifar-10-batches-py "
            "(torchvision format). Point COURSEKIT_DATA (or the data_dir parameter) at a folder that "
            "holds cifar10/, e.g. export COURSEKIT_DATA=../shared/datasets"
        ) from err


# ----------------------------------------------------------------------------- splits

@dataclass
class DataSplits:
    """Train / validation / test images as uint8 tensors (N, 3, H, W) and int64 labels (N,).

    ``mean``/``std`` (3,) are the per-channel statistics of the full training
    split in [0, 1] units; ``Batches`` normalises with them.
    """

    name: str
    classes: list[str]
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> int:
        return int(self.train_x.shape[-1])

    def to(self, device) -> DataSplits:
        """Move every tensor to ``device`` once, so batches never cross the bus again."""
        moved = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in self.__dict__.items()}
        return DataSplits(**moved)

    def summary(self) -> str:
        return (f"{self.name}: {self.num_classes} classes, {len(self.train_y)} train / {len(self.val_y)} val / "
                f"{len(self.test_y)} test images of {tuple(self.train_x.shape[1:])}")


def _per_class_indices(y: torch.Tensor, num_classes: int, cap: int | None, gen: torch.Generator) -> list[torch.Tensor]:
    out = []
    for c in range(num_classes):
        idx = (y == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        out.append(idx[:cap] if cap is not None else idx)
    return out


def load_data(
    dataset: str = "cifar10",
    data_dir: str | os.PathLike | None = None,
    *,
    classes: list[str] | None = None,
    train_per_class: int | None = None,
    test_per_class: int | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    image_size: int | None = None,
) -> DataSplits:
    """Load a dataset, take a class subset and per-class caps, carve a seeded validation split.

    Args:
        dataset: "cifar10" or "imagefolder:PATH".
        data_dir: folder holding cifar10/ (None: $COURSEKIT_DATA, else the repo's data/).
        classes: class names to keep (relabelled 0..k-1 in the given order); None keeps all.
        train_per_class: cap on training images per class, taken before the validation
            split is carved from them; None takes all.
        test_per_class: cap on test images per class (a seeded subset); None takes all.
        val_fraction: share of each class's training images held out for validation, in [0, 1).
        seed: fixes which images are taken and which go to validation.
        image_size: resize imagefolder images to (image_size, image_size); CIFAR-10 stays 32.
    Returns:
        DataSplits on the CPU; call ``.to(device)`` once.
    """
    kind, path = parse_dataset(dataset)
    fraction("val_fraction", val_fraction)
    for pname, v in (("train_per_class", train_per_class), ("test_per_class", test_per_class)):
        if v is not None and (not isinstance(v, int) or v < 1):
            raise ValueError(f"{pname}: {v!r} is not allowed; use a positive integer or None for all")
    if image_size is not None and (not isinstance(image_size, int) or image_size < 8):
        raise ValueError(f"image_size: {image_size!r} is not allowed; use an integer >= 8 or None")

    if kind == "cifar10":
        raw = _read_cifar10(default_data_dir(data_dir))
        name = "cifar10"
        if image_size not in (None, 32):
            raw = dict(raw)
            for k in ("train_x", "test_x"):
                raw[k] = F.interpolate(raw[k].float(), size=(image_size, image_size), mode="bilinear",
                                       antialias=True).round().clamp(0, 255).to(torch.uint8)
            raw["train_mean"], raw["train_std"] = _channel_stats(raw["train_x"])
    else:
        if not path.is_dir():
            raise ValueError(f"dataset: imagefolder path {path} does not exist or is not a folder")
        raw = _read_imagefolder(path, image_size, "imagefolder")
        name = f"imagefolder:{path}"
    all_classes = list(raw["classes"])
    if len(all_classes) < 2:
        raise ValueError(f"dataset: {dataset!r} has {len(all_classes)} class(es) {all_classes}; at least 2 are needed")

    keep = all_classes if classes is None else list(classes)
    unknown = [c for c in keep if c not in all_classes]
    if unknown:
        raise ValueError(f"classes: unknown class name(s) {unknown}; allowed: {all_classes}")
    if len(keep) < 2 or len(set(keep)) != len(keep):
        raise ValueError(f"classes: {keep!r} must name at least 2 distinct classes")
    old_to_new = torch.full((len(all_classes),), -1, dtype=torch.int64)
    for new, c in enumerate(keep):
        old_to_new[all_classes.index(c)] = new

    gen = torch.Generator().manual_seed(seed)
    mean, std = raw["train_mean"], raw["train_std"]

    ytr = old_to_new[raw["train_y"]]
    tr_idx, va_idx = [], []
    for idx in _per_class_indices(ytr, len(keep), train_per_class, gen):
        n_val = int(round(val_fraction * len(idx)))
        if val_fraction > 0 and len(idx) > 1:
            n_val = min(max(n_val, 1), len(idx) - 1)
        va_idx.append(idx[:n_val])
        tr_idx.append(idx[n_val:])
    tr_idx = torch.cat(tr_idx)
    va_idx = torch.cat(va_idx)
    yte = old_to_new[raw["test_y"]]
    te_idx = torch.cat(_per_class_indices(yte, len(keep), test_per_class, gen))
    if len(te_idx) == 0:
        raise ValueError(f"dataset: {dataset!r} has no held-out images for classes {keep}")
    return DataSplits(
        name=name,
        classes=keep,
        train_x=raw["train_x"][tr_idx],
        train_y=ytr[tr_idx],
        val_x=raw["train_x"][va_idx],
        val_y=ytr[va_idx],
        test_x=raw["test_x"][te_idx],
        test_y=yte[te_idx],
        mean=mean,
        std=std,
    )


# ----------------------------------------------------------------------------- batches

def augment_batch(x: torch.Tensor, pad: int = 4, flip: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random pad-and-crop (reflect padding) and horizontal flip, per image, on x's device.

    x: (N, C, H, W) float -> (N, C, H, W). Random numbers come from ``generator``
    (on the CPU, so runs are reproducible on any device).
    """
    n, _, h, w = x.shape
    if pad > 0:
        xp = F.pad(x, (pad, pad, pad, pad), mode="reflect")  # (N, C, H+2p, W+2p)
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
        rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # (N, 1, H, 1)
        cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]  # (N, 1, 1, W)
        nidx = torch.arange(n, device=x.device)[:, None, None, None]
        cidx = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
        x = xp[nidx, cidx, rows, cols]
    if flip:
        mask = (torch.rand(n, generator=generator) < 0.5).to(x.device)
        x = torch.where(mask[:, None, None, None], x.flip(3), x)
    return x


class Batches:
    """Iterate over (images, labels) batches cut from tensors that already sit on the device.

    Images are uint8 (N, 3, H, W); each batch is converted to float, normalised
    with ``mean``/``std`` and, when ``augment`` is True, pad-cropped and
    flipped on the device. No DataLoader, no workers. The order of epoch ``e``
    depends only on (seed, e), so two loaders with the same seed yield the same
    batches.

    ``pad`` is the crop's padding in pixels (0 turns cropping off).

    Yields x: (B, 3, H, W) float32 (channels_last when asked), y: (B,) int64.
    """

    def __init__(self, x, y, mean, std, batch_size=256, shuffle=False, augment=False, seed=0,
                 drop_last=False, channels_last=False, pad=4):
        if batch_size < 1:
            raise ValueError(f"batch_size: {batch_size!r} is not allowed; use a positive integer")
        if len(x) != len(y):
            raise ValueError(f"x and y differ in length: {len(x)} vs {len(y)}")
        self.x, self.y = x, y
        self.mean = mean.to(x.device).view(1, -1, 1, 1)
        self.std = std.to(x.device).view(1, -1, 1, 1)
        self.batch_size, self.shuffle, self.augment = batch_size, shuffle, augment
        self.seed, self.drop_last, self.channels_last, self.pad = seed, drop_last, channels_last, pad
        self.epoch = 0

    def __len__(self) -> int:
        n = len(self.y)
        return n // self.batch_size if self.drop_last and n >= self.batch_size else -(-n // self.batch_size)

    def __iter__(self):
        gen, order = epoch_order(len(self.y), seed=self.seed, epoch=self.epoch, shuffle=self.shuffle, device=self.x.device)
        self.epoch += 1
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            x = (self.x[idx].float().div_(255) - self.mean) / self.std
            if self.augment:
                x = augment_batch(x, pad=self.pad, generator=gen)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.y[idx]
