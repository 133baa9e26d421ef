"""Text classification data for Part 2: SST-2 and TREC, tokenised once and cached, batched with dynamic padding.

The files are read from ``<data dir>/sst2/`` and ``<data dir>/trec/`` (``LABEL<space>sentence`` per line; the
data dir is ``data_dir``, else $COURSEKIT_DATA, else the repository's data/). When they are absent, the same
splits are fetched from the Hugging Face hub with ``datasets`` (a dependency of coursekit; network needed)
and written there in that format, as torchvision downloads CIFAR-10 into the data dir. SST-2 has train / dev / test;
TREC has train / test, so its dev split is carved from train with the seed. Settings are chosen on dev,
final numbers come from test.

Token ids are cached in the cache folder ($COURSEKIT_CACHE), keyed by the file's contents, the tokenizer's
vocabulary and ``max_length``, never inside the dataset folder. ``TextBatches`` cuts batches of similar
length (bucketing) and pads each batch only to its own longest sentence, so padding costs little.
Introduced in notebooks/07_transformer_transfer.ipynb.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .downloads import ensure_folder, publish_files
from .files import save_torch_atomic
from .paths import cache_dir, default_data_dir
from .validate import integer

__all__ = ["TextTask", "TASKS", "TextSplit", "TextSplits", "read_task_file", "load_text_task", "download_text_task",
           "subset_per_class",
           "TextBatches", "pad_batch", "validate_task"]


@dataclass(frozen=True)
class TextTask:
    """A labelled sentence task: its folder under the data dir, split files and class names (label order).

    ``hub``: the hub dataset with the same sentence-level splits, {our split: hub split}, its text and label
    columns, and how a hub label name maps to our class name (the hub's label order may differ from ours)."""

    name: str
    folder: str
    files: dict
    classes: tuple
    hub_id: str
    hub_splits: dict
    hub_columns: tuple
    hub_label_names: dict


TASKS = {
    # SetFit/sst2 holds the sentence-level SST-2 with test labels (GLUE's SST-2 test split has none)
    "sst2": TextTask("sst2", "sst2", {"train": "stsa.binary.train", "dev": "stsa.binary.dev", "test": "stsa.binary.test"},
                     ("negative", "positive"), "SetFit/sst2", {"train": "train", "dev": "validation", "test": "test"},
                     ("text", "label"), {"negative": "negative", "positive": "positive"}),
    "trec": TextTask("trec", "trec", {"train": "TREC.train.all", "test": "TREC.test.all"},
                     ("description", "entity", "abbreviation", "human", "location", "number"), "CogComp/trec",
                     {"train": "train", "test": "test"}, ("text", "coarse_label"),
                     {"DESC": "description", "ENTY": "entity", "ABBR": "abbreviation", "HUM": "human",
                      "LOC": "location", "NUM": "number"}),
}


def validate_task(task: str) -> TextTask:
    """The TextTask called ``task``; ValueError naming the allowed tasks otherwise."""
    if task not in TASKS:
        raise ValueError(f"task: {task!r} is not allowed; use {', '.join(TASKS)}")
    return TASKS[task]


def _decode_line(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:  # a few TREC questions are latin-1
        return raw.decode("latin-1")


def read_task_file(path: str | os.PathLike) -> tuple[list[str], list[int]]:
    """Sentences and integer labels of a ``LABEL<space>sentence`` file."""
    texts, labels = [], []
    for n, raw in enumerate(Path(path).read_bytes().splitlines(), 1):
        line = _decode_line(raw).strip()
        if not line:
            continue
        label, _, text = line.partition(" ")
        if not label.isdigit() or not text:
            raise ValueError(f"{path}, line {n}: expected 'LABEL sentence', got {line[:60]!r}")
        labels.append(int(label))
        texts.append(text)
    return texts, labels


@dataclass
class TextSplit:
    """One split: ``ids`` a list of 1-D long tensors (token ids, special tokens included), ``labels`` (N,) long,
    ``texts`` the sentences."""

    ids: list
    labels: torch.Tensor
    texts: list

    def __len__(self) -> int:
        return len(self.labels)

    def select(self, index) -> TextSplit:
        index = [int(i) for i in index]
        return TextSplit([self.ids[i] for i in index], self.labels[index], [self.texts[i] for i in index])

    def lengths(self) -> torch.Tensor:
        return torch.tensor([len(t) for t in self.ids])


@dataclass
class TextSplits:
    """train / val / test splits of a task (val = SST-2's dev, or carved from TREC's train with the seed)."""

    task: str
    classes: tuple
    train: TextSplit
    val: TextSplit
    test: TextSplit
    pad_id: int
    info: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def summary(self) -> str:
        lens = torch.cat([s.lengths() for s in (self.train, self.val, self.test)]).float()
        return (f"{self.task}: {self.num_classes} classes, {len(self.train)} train / {len(self.val)} val / "
                f"{len(self.test)} test sentences; tokens per sentence: mean {lens.mean():.1f}, "
                f"max {int(lens.max())}")


def download_text_task(task: str, data_dir: str | os.PathLike | None = None, hub_id: str | None = None) -> Path:
    """Fetch ``task`` with ``datasets.load_dataset(hub_id)`` (default: the task's hub dataset; a local folder of
    data files also works) and write its splits as ``LABEL<space>sentence`` files in ``<data dir>/<task folder>/``,
    labels renumbered into this module's class order by name. Nothing is overwritten. Returns the folder."""
    spec = validate_task(task)
    try:
        from datasets import load_dataset
    except ImportError as err:
        raise ImportError(f"{task}: fetching from the hub needs the datasets package: pip install datasets "
                          f"(or put the files in the data dir)") from err
    root = default_data_dir(data_dir) / spec.folder
    existing = [f for f in spec.files.values() if (root / f).exists()]
    if existing:
        raise FileExistsError(f"{task}: {', '.join(existing)} already in {root}; not overwritten")
    source = hub_id or spec.hub_id
    hub = load_dataset(source)
    text_col, label_col = spec.hub_columns
    lines = {}
    for ours, theirs in spec.hub_splits.items():
        split = hub[theirs]
        feature = split.features[label_col]
        names = feature.names if hasattr(feature, "names") else None
        out = []
        for text, label in zip(split[text_col], split[label_col], strict=True):
            name = spec.hub_label_names.get(names[label] if names else spec.classes[label]) if label >= 0 else None
            if name is None:
                raise ValueError(f"{task}: {source} split {theirs!r} has label {label!r}, which is "
                                 f"not one of {sorted(spec.hub_label_names)} (a split without labels?)")
            out.append(f"{spec.classes.index(name)} {' '.join(text.split())}")
        lines[ours] = out
    publish_files(root, {name: ("\n".join(lines[ours]) + "\n").encode("utf-8") for ours, name in spec.files.items()})
    return root


def _tokenizer_fingerprint(tokenizer) -> str:
    vocab = tokenizer.get_vocab()
    blob = json.dumps(sorted(vocab.items(), key=lambda kv: kv[1])[:50000]) + type(tokenizer).__name__
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _tokenise_cached(path: Path, tokenizer, max_length: int) -> dict:
    """{"texts", "labels", "ids"} of a task file, the token ids cached under cache_dir()/text/."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    key = f"{path.name}-{digest}-{_tokenizer_fingerprint(tokenizer)}-L{max_length}"
    cache = cache_dir() / "text" / f"{key}.pt"
    texts, labels = read_task_file(path)
    if cache.exists():
        stored = torch.load(cache, map_location="cpu", weights_only=True)
        flat, offsets = stored["flat"], stored["offsets"].tolist()
    else:
        enc = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
        flat = torch.tensor([t for seq in enc for t in seq], dtype=torch.long)
        offsets = [0]
        for seq in enc:
            offsets.append(offsets[-1] + len(seq))
        save_torch_atomic({"flat": flat, "offsets": torch.tensor(offsets)}, cache)  # a parallel run never reads half a file
    ids = [flat[offsets[i]:offsets[i + 1]] for i in range(len(texts))]
    return {"texts": texts, "labels": labels, "ids": ids}


def _split(raw: dict) -> TextSplit:
    return TextSplit(raw["ids"], torch.tensor(raw["labels"], dtype=torch.long), raw["texts"])


def load_text_task(task: str, tokenizer, *, data_dir: str | os.PathLike | None = None, max_length: int = 128,
                   seed: int = 0, val_fraction: float = 0.1, test_limit: int | None = None,
                   train_limit: int | None = None) -> TextSplits:
    """Read, tokenise (cached) and split ``task`` ("sst2" or "trec").

    Args:
        tokenizer: a Hugging Face tokenizer (the model's own: another model's ids mean nothing to it).
        max_length: sentences are truncated to this many tokens, [CLS] and [SEP] included.
        val_fraction: share of train carved out as the dev split when the task has none (TREC), with ``seed``.
        test_limit, train_limit: keep only the first N test and dev sentences / a seeded random N train sentences
            (smoke runs).
    Raises:
        ValueError for an unknown task; FileNotFoundError saying where it looked when the files are absent and
        could not be fetched from the hub (``download_text_task``).
    """
    spec = validate_task(task)
    root = ensure_folder(default_data_dir(data_dir) / spec.folder, spec.files.values(),
                         lambda: download_text_task(task, data_dir), f"{spec.hub_id} from the hub")
    raw = {name: _tokenise_cached(root / f, tokenizer, max_length) for name, f in spec.files.items()}
    gen = torch.Generator().manual_seed(seed)
    train = _split(raw["train"])
    if "dev" in raw:
        val = _split(raw["dev"])
    else:
        order = torch.randperm(len(train), generator=gen)
        n_val = max(1, round(val_fraction * len(train)))
        val, train = train.select(order[:n_val]), train.select(order[n_val:])
    if train_limit is not None and train_limit < len(train):
        train = train.select(torch.randperm(len(train), generator=gen)[:train_limit])
    test = _split(raw["test"])
    if test_limit is not None:
        test = test.select(range(min(test_limit, len(test))))
        val = val.select(range(min(test_limit, len(val))))
    labels = torch.cat([train.labels, val.labels, test.labels])
    if int(labels.max()) >= len(spec.classes) or int(labels.min()) < 0:
        raise ValueError(f"{task}: labels outside 0..{len(spec.classes) - 1} in {root}")
    return TextSplits(task, spec.classes, train, val, test, pad_id=int(tokenizer.pad_token_id),
                      info={"root": str(root), "max_length": max_length})


def subset_per_class(split: TextSplit, per_class: int | None, seed: int = 0) -> TextSplit:
    """At most ``per_class`` sentences of each class, drawn with ``seed`` (None keeps everything).

    The same seed gives the same subset, so every method of a comparison sees the same labelled sentences.
    """
    if per_class is None:
        return split
    integer("labels_per_class", per_class, lo=1, allowed="an integer >= 1 or None for all")
    gen = torch.Generator().manual_seed(seed)
    keep = []
    for c in torch.unique(split.labels).tolist():
        idx = torch.nonzero(split.labels == c).flatten()
        keep.append(idx[torch.randperm(len(idx), generator=gen)[:per_class]])
    return split.select(torch.cat(keep).sort().values)


def pad_batch(seqs: list, pad_id: int) -> torch.Tensor:
    """Right-pad 1-D id tensors to the longest one: list of (L_i,) -> (N, max L_i) long."""
    out = torch.full((len(seqs), max(len(s) for s in seqs)), pad_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = s
    return out


class TextBatches:
    """(input_ids (N, L), labels (N,)) batches over a TextSplit, each padded only to its own longest sentence.

    shuffle=True (training): every pass draws a new order from ``seed``'s generator, groups the sentences in
    pools of ``bucket`` batches, sorts each pool by length and cuts it into batches, then shuffles the batches
    (the usual bucket iterator: similar lengths together, batch order still random). shuffle=False
    (evaluation): sorted by length, so the least padding. The attention mask is ``input_ids != pad_id``
    (the models of Part 2 compute it themselves). Batches live on ``device``.
    """

    def __init__(self, split: TextSplit, batch_size: int, *, pad_id: int, shuffle: bool = False, seed: int = 0,
                 bucket: int = 50, device: torch.device | str = "cpu", drop_last: bool = False):
        integer("batch_size", batch_size, lo=1)
        if len(split) == 0:
            raise ValueError("TextBatches: the split is empty")
        self.split, self.batch_size, self.pad_id = split, batch_size, pad_id
        self.shuffle, self.bucket, self.device = shuffle, bucket, torch.device(device)
        self.drop_last = drop_last and len(split) > batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.lengths = split.lengths()

    def __len__(self) -> int:
        n = len(self.split)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _batches(self) -> list[torch.Tensor]:
        n, bs = len(self.split), self.batch_size
        if not self.shuffle:
            order = torch.argsort(self.lengths, stable=True)
            return [order[i:i + bs] for i in range(0, n, bs)]
        order = torch.randperm(n, generator=self.generator)
        pool = bs * self.bucket
        batches = []
        for start in range(0, n, pool):
            chunk = order[start:start + pool]
            chunk = chunk[torch.argsort(self.lengths[chunk], stable=True)]
            batches += [chunk[i:i + bs] for i in range(0, len(chunk), bs)]
        if self.drop_last:
            batches = [b for b in batches if len(b) == bs]
        perm = torch.randperm(len(batches), generator=self.generator)
        return [batches[i] for i in perm]

    def __iter__(self):
        for index in self._batches():
            ids = pad_batch([self.split.ids[i] for i in index.tolist()], self.pad_id)
            yield ids.to(self.device), self.split.labels[index].to(self.device)

    def padding_share(self) -> float:
        """Share of the token slots of one pass that are padding (what bucketing saves)."""
        slots = sum(len(b) * int(self.lengths[b].max()) for b in self._batches())
        return 1.0 - float(self.lengths.sum()) / slots
