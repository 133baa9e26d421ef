import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "datasets"


@pytest.fixture(scope="session")
def _session_cache(tmp_path_factory):
    """One decoded-image cache for the whole test session: CIFAR-10 is decoded once, not once per notebook test."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path_factory, monkeypatch, _session_cache):
    """Keep every test's cache and run dirs out of the user's folders."""
    monkeypatch.setenv("COURSEKIT_CACHE", str(_session_cache))
    monkeypatch.setenv("COURSEKIT_RUNS_BASE", str(tmp_path_factory.mktemp("runs")))
    monkeypatch.delenv("COURSEKIT_PROFILE", raising=False)
    torch.manual_seed(0)


def cifar_data_dir() -> str | None:
    """A folder holding cifar10/ for the notebook tests: $COURSEKIT_DATA, else ../shared/datasets."""
    for cand in (os.environ.get("COURSEKIT_DATA"), SHARED_DATA, REPO / "data"):
        if cand and (Path(cand) / "cifar10").is_dir():
            return str(cand)
    return None


def make_imagefolder(root: Path, classes=("cat", "dog"), per_class=6, splits=("train", "test"), size=(20, 28)):
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
