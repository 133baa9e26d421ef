import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "datasets"


@pytest.fixture(scope="session")
def _session_cache(tmp_path_factory):
    """One cache of decoded data for the whole test session (CIFAR-10 decoded once, the GGUF decoder converted once),
    or, when COURSEKIT_TEST_CACHE names a folder, one for every pytest process that shares it (``make test``'s lanes):
    every cache write is atomic (a temporary file renamed into place), so a process never reads half of what another
    is writing, and the lanes reuse what the first of them built. Tests of the cache itself use an empty one of their
    own."""
    shared = os.environ.get("COURSEKIT_TEST_CACHE")
    if shared:
        Path(shared).mkdir(parents=True, exist_ok=True)
        return Path(shared)
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path_factory, monkeypatch, _session_cache):
    """Keep every test's cache and run dirs out of the user's folders."""
    monkeypatch.setenv("COURSEKIT_CACHE", str(_session_cache))
    monkeypatch.setenv("COURSEKIT_RUNS_BASE", str(tmp_path_factory.mktemp("runs")))
    monkeypatch.delenv("COURSEKIT_PROFILE", raising=False)
    torch.manual_seed(0)


def _cifar_data_dir() -> str | None:
    for cand in (os.environ.get("COURSEKIT_DATA"), SHARED_DATA, REPO / "data"):
        if cand and (Path(cand) / "cifar10").is_dir():
            return str(cand)
    return None


@pytest.fixture(scope="session")
def cifar_dir() -> str:
    """A folder holding cifar10/ for the notebook tests ($COURSEKIT_DATA, else ../shared/datasets); the test is
    skipped, saying why, when there is none."""
    found = _cifar_data_dir()
    if found is None:
        pytest.skip("no cifar10/ under COURSEKIT_DATA or ../shared/datasets")
    return found


def _make_imagefolder(root: Path, classes=("cat", "dog"), per_class=6, splits=("train", "test"), size=(20, 28)):
    """Write small random PNG images in the ImageFolder layout; returns root."""
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    for split in splits:
        for ci, c in enumerate(classes):
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                img = torch.randint(0, 256, (3, *size), generator=g, dtype=torch.uint8)
                img[ci % 3] = 255 - (ci * 40)  # a class-dependent colour
                Image.fromarray(img.permute(1, 2, 0).numpy()).save(d / f"{i:03d}.png")
    return root


@pytest.fixture
def imagefolder():
    """Factory that writes small random PNGs in the ImageFolder layout and returns the root:
    imagefolder(root, classes=("cat", "dog"), per_class=6, splits=("train", "test"), size=(20, 28))."""
    return _make_imagefolder


@pytest.fixture
def toy_batches():
    """Factory of image ``Batches`` of two classes a small CNN separates easily (bright vs dark, 3x16x16 uint8):
    toy_batches(n=64, seed=0, **Batches keyword arguments such as batch_size, shuffle, augment, channels_last)."""
    from coursekit.data import Batches

    def make(n=64, seed=0, **kw):
        g = torch.Generator().manual_seed(seed)
        y = torch.arange(n) % 2
        x = (torch.rand(n, 3, 16, 16, generator=g) * 100 + 120 * y.view(-1, 1, 1, 1)).to(torch.uint8)
        return Batches(x, y, torch.full((3,), 0.45), torch.full((3,), 0.25), **kw)

    return make


@pytest.fixture
def randomize_bn():
    """Function that gives every BatchNorm of a model trained-looking statistics and affine weights (seeded) and
    returns the model: the zero-init of a block's last BN would otherwise make every block an identity."""
    from torch import nn

    def apply(model, seed=0):
        g = torch.Generator().manual_seed(seed)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.data = torch.rand(m.num_features, generator=g) + 0.5
                m.bias.data = torch.randn(m.num_features, generator=g) * 0.1
                m.running_mean = torch.randn(m.num_features, generator=g) * 0.1
                m.running_var = torch.rand(m.num_features, generator=g) + 0.5
        return model.eval()

    return apply


@pytest.fixture
def cifar_images():
    """Factory of seeded random CIFAR-shaped inputs: cifar_images(n=3, seed=1) -> (n, 3, 32, 32) float."""
    return lambda n=3, seed=1: torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def tiny_classifier():
    """Factory of a tiny randomly initialised BERT TextClassifier (milliseconds; dropout off), for Part 2's tests:
    tiny_classifier(layers=3, hidden=16, heads=4, ffn=32, vocab=60, classes=2, seed=0)."""
    from transformers import BertConfig, BertModel

    from coursekit.textmodels import TextClassifier

    def make(layers=3, hidden=16, heads=4, ffn=32, vocab=60, classes=2, seed=0):
        torch.manual_seed(seed)
        cfg = BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                         intermediate_size=ffn, max_position_embeddings=64, hidden_dropout_prob=0.0,
                         attention_probs_dropout_prob=0.0)
        return TextClassifier(BertModel(cfg), classes, pad_id=0, dropout=0.0).eval()

    return make


@pytest.fixture
def token_batches():
    """Factory of (ids (N, L), labels (N,)) batches with padding (id 0) at the end of shorter rows."""
    def make(n_batches=2, batch=6, length=10, vocab=60, classes=2, seed=0):
        g = torch.Generator().manual_seed(seed)
        out = []
        for _ in range(n_batches):
            x = torch.randint(3, vocab, (batch, length), generator=g)
            for r in range(batch):
                x[r, int(torch.randint(3, length + 1, (1,), generator=g)):] = 0
            out.append((x, torch.randint(0, classes, (batch,), generator=g)))
        return out

    return make


@pytest.fixture
def tiny_bert():
    """Factory of a tiny randomly initialised BertModel (seed 0, dropout off): tiny_bert(layers=4, hidden=16, heads=2,
    ffn=32, vocab=60)."""
    from transformers import BertConfig, BertModel

    def make(layers=4, hidden=16, heads=2, ffn=32, vocab=60):
        torch.manual_seed(0)
        cfg = BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                         intermediate_size=ffn, max_position_embeddings=64, hidden_dropout_prob=0.0,
                         attention_probs_dropout_prob=0.0)
        return BertModel(cfg)

    return make


@pytest.fixture
def tiny_split():
    """Factory of a ``TextSplit`` of n random sentences [CLS] w... [SEP] (ids 1 and 2) of 1-11 words, label = first
    word id mod 2: tiny_split(n=24, seed=0, vocab=60)."""
    from coursekit.textdata import TextSplit

    def make(n=24, seed=0, vocab=60):
        g = torch.Generator().manual_seed(seed)
        ids = [torch.cat([torch.tensor([1]), torch.randint(5, vocab, (int(torch.randint(1, 12, (1,), generator=g)),),
                                                           generator=g), torch.tensor([2])]) for _ in range(n)]
        labels = torch.tensor([int(t[1] % 2) for t in ids])
        return TextSplit(ids, labels, [str(i) for i in range(n)])

    return make


@pytest.fixture
def read_tensorboard():
    """Function reading TensorBoard event files back: read_tensorboard(log_dir) -> (scalars {tag: [(step, value)]},
    whether a graph is stored, the EventAccumulator)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def read(log_dir):
        acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
        acc.Reload()
        scalars = {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
        return scalars, acc.Tags()["graph"], acc

    return read
