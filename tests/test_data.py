from pathlib import Path

import pytest
import torch

from coursekit import data as D
from coursekit.data import Batches, augment_batch, load_data, parse_dataset


def test_imagefolder_is_decoded_resized_and_cached_outside_the_dataset(tmp_path, monkeypatch, imagefolder):
    monkeypatch.setenv("COURSEKIT_CACHE", str(tmp_path / "cache"))  # an empty cache of its own
    root = imagefolder(tmp_path / "pets", classes=("cat", "dog", "owl"), per_class=10)
    d = load_data(f"imagefolder:{root}", image_size=16, val_fraction=0.2, seed=0)
    assert d.classes == ["cat", "dog", "owl"]
    assert d.train_x.dtype == torch.uint8 and d.train_x.shape[1:] == (3, 16, 16)
    assert len(d.train_y) == 24 and len(d.val_y) == 6 and len(d.test_y) == 30
    assert torch.bincount(d.val_y).tolist() == [2, 2, 2], "validation is stratified per class"
    cached = list(Path(D.cache_dir()).glob("*.pt"))
    assert len(cached) == 1, "decoded once into the cache folder"
    assert not list(root.rglob("*.pt")), "nothing is written inside the dataset folder"
    # a second load reads the cache: decoding is not called again
    monkeypatch.setattr(D, "_decode", lambda *a: (_ for _ in ()).throw(AssertionError("decoded twice")))
    d2 = load_data(f"imagefolder:{root}", image_size=16, val_fraction=0.2, seed=0)
    assert torch.equal(d.train_x, d2.train_x)
    # the normalisation statistics (over every training image, validation included) are kept with the images
    everything = torch.cat([d.train_x, d.val_x]).float().div(255)
    torch.testing.assert_close(d.mean, everything.mean(dim=(0, 2, 3)))
    torch.testing.assert_close(d.std, everything.std(dim=(0, 2, 3)))
    monkeypatch.setattr(D, "_channel_stats", lambda *a: (_ for _ in ()).throw(AssertionError("computed twice")))
    d3 = load_data(f"imagefolder:{root}", image_size=16, val_fraction=0.2, seed=1)
    assert torch.equal(d3.mean, d.mean) and torch.equal(d3.std, d.std)


def test_val_split_is_seeded_and_disjoint(tmp_path, imagefolder):
    root = imagefolder(tmp_path / "ds", per_class=12, size=(8, 8))
    a = load_data(f"imagefolder:{root}", val_fraction=0.25, seed=1)
    b = load_data(f"imagefolder:{root}", val_fraction=0.25, seed=1)
    c = load_data(f"imagefolder:{root}", val_fraction=0.25, seed=2)
    assert torch.equal(a.val_x, b.val_x) and torch.equal(a.train_x, b.train_x)
    assert not torch.equal(a.val_x, c.val_x)
    train_rows = {tuple(x.flatten().tolist()) for x in a.train_x}
    assert all(tuple(x.flatten().tolist()) not in train_rows for x in a.val_x), "no image is in both splits"


def test_class_subset_and_caps(tmp_path, imagefolder):
    root = imagefolder(tmp_path / "ds", classes=("a", "b", "c"), per_class=10, size=(8, 8))
    d = load_data(f"imagefolder:{root}", classes=["c", "a"], train_per_class=4, test_per_class=3, val_fraction=0.25)
    assert d.classes == ["c", "a"]
    assert torch.bincount(d.train_y).tolist() == [3, 3] and torch.bincount(d.val_y).tolist() == [1, 1]
    assert torch.bincount(d.test_y).tolist() == [3, 3]


@pytest.mark.parametrize("kwargs,match", [
    ({"classes": ["cat", "zebra"]}, r"classes: unknown class name\(s\) \['zebra'\]"),
    ({"val_fraction": 1.0}, r"val_fraction: 1.0 is not allowed; use a number in \[0, 1\)"),
    ({"train_per_class": 0}, "train_per_class: 0 is not allowed"),
    ({"classes": ["cat"]}, "at least 2 distinct classes"),
])
def test_bad_arguments(tmp_path, kwargs, match, imagefolder):
    root = imagefolder(tmp_path / "ds", per_class=3, size=(8, 8))
    with pytest.raises(ValueError, match=match):
        load_data(f"imagefolder:{root}", **kwargs)


def test_bad_folders(tmp_path, imagefolder):
    with pytest.raises(ValueError, match="dataset: 'mnist' is not allowed"):
        parse_dataset("mnist")
    no_train = tmp_path / "a"
    (no_train / "test" / "x").mkdir(parents=True)
    with pytest.raises(ValueError, match="has no train/ folder"):
        load_data(f"imagefolder:{no_train}")
    no_test = imagefolder(tmp_path / "b", per_class=2, splits=("train",), size=(8, 8))
    with pytest.raises(ValueError, match="neither test/ nor val/"):
        load_data(f"imagefolder:{no_test}")
    one_class = imagefolder(tmp_path / "c", classes=("only",), per_class=2, size=(8, 8))
    with pytest.raises(ValueError, match="1 class"):
        load_data(f"imagefolder:{one_class}")
    with pytest.raises(ValueError, match="does not exist"):
        load_data(f"imagefolder:{tmp_path / 'missing'}")


def test_val_folder_is_used_when_there_is_no_test_folder(tmp_path, imagefolder):
    root = imagefolder(tmp_path / "v", per_class=3, splits=("train", "val"), size=(8, 8))
    assert len(load_data(f"imagefolder:{root}", val_fraction=0.0).test_y) == 6


def test_missing_cifar10_without_network_says_where_it_looked(tmp_path, monkeypatch):
    import torchvision.datasets

    class NoNetwork(torchvision.datasets.CIFAR10):
        def download(self):
            raise OSError("network is unreachable")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", NoNetwork)
    with pytest.raises(FileNotFoundError) as err:
        load_data("cifar10", tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "cifar10") in msg and "COURSEKIT_DATA" in msg and "network is unreachable" in msg


def _synthetic_batches(**kw):
    x = torch.arange(20, dtype=torch.uint8).view(20, 1, 1, 1).expand(20, 3, 8, 8).contiguous()
    y = torch.arange(20) % 4
    return Batches(x, y, torch.zeros(3), torch.ones(3), **kw)


def test_batches_are_deterministic_under_a_seed_and_cover_every_image():
    a = [y.tolist() for _, y in _synthetic_batches(batch_size=6, shuffle=True, seed=3)]
    b = [y.tolist() for _, y in _synthetic_batches(batch_size=6, shuffle=True, seed=3)]
    assert a == b and [len(v) for v in a] == [6, 6, 6, 2]
    xs = torch.cat([x[:, 0, 0, 0] for x, _ in _synthetic_batches(batch_size=6, shuffle=True, seed=3)])
    assert sorted((xs * 255).round().int().tolist()) == list(range(20)), "one epoch sees each image once"
    loader = _synthetic_batches(batch_size=6, shuffle=True, seed=3)
    first, second = [torch.cat([y for _, y in loader]) for _ in range(2)]
    assert not torch.equal(first, second), "each epoch has its own order"
    assert len(_synthetic_batches(batch_size=6, drop_last=True)) == 3


def test_batches_normalise_and_keep_channels_last():
    x = torch.full((4, 3, 8, 8), 255, dtype=torch.uint8)
    b = Batches(x, torch.zeros(4, dtype=torch.long), torch.full((3,), 0.5), torch.full((3,), 0.25),
                batch_size=4, channels_last=True)
    xb, _ = next(iter(b))
    assert torch.allclose(xb, torch.full_like(xb, 2.0)), "(1 - 0.5) / 0.25"
    assert xb.is_contiguous(memory_format=torch.channels_last)


def test_augment_batch_crops_and_flips_per_image():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).view(2, 1, 6, 6)
    out = augment_batch(x, pad=0, flip=True, generator=torch.Generator().manual_seed(0))
    for i in range(2):
        assert torch.equal(out[i], x[i]) or torch.equal(out[i], x[i].flip(2))
    out = augment_batch(x, pad=2, flip=False, generator=torch.Generator().manual_seed(1))
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2), mode="reflect")
    for i in range(2):  # every output is some 6x6 window of the padded image
        assert any(torch.equal(out[i], padded[i, :, r:r + 6, c:c + 6]) for r in range(5) for c in range(5))


def test_cifar10_in_torchvision_format_is_read_through_torchvision(tmp_path, monkeypatch):
    """The cifar-10-batches-py layout goes through torchvision.datasets.CIFAR10 (faked here: no real files)."""
    import numpy as np
    import torchvision.datasets

    seen = []

    class FakeCIFAR10:
        def __init__(self, root, train, download):
            seen.append((root, train, download))
            n = 20 if train else 10
            self.data = np.full((n, 32, 32, 3), 7 if train else 9, dtype=np.uint8)
            self.targets = [i % 10 for i in range(n)]

    (tmp_path / "cifar10" / "cifar-10-batches-py").mkdir(parents=True)
    (tmp_path / "cifar10" / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"x")
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCIFAR10)
    d = load_data("cifar10", tmp_path, val_fraction=0.0)
    assert seen == [(str(tmp_path / "cifar10"), True, False), (str(tmp_path / "cifar10"), False, False)]
    assert d.train_x.shape == (20, 3, 32, 32) and int(d.train_x.max()) == 7 and len(d.test_y) == 10
    assert d.classes[0] == "airplane" and d.classes[-1] == "truck"
