"""Part 2 foundations: text data, the TextClassifier, students, hidden-state KD, recipes and checkpoints.

Most tests use a tiny randomly initialised BERT (milliseconds); the tokenizer tests use MiniLM's real tokenizer
from the offline copy that `make` installs (skipped when it is absent)."""

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from coursekit.kdloss import kd_loss
from coursekit.metrics import count_params
from coursekit.params import parse_int_list, parse_str_list
from coursekit.pretrained import ENCODER, offline_copy_dir
from coursekit.recipe import Recipe
from coursekit.textdata import TextBatches, load_text_task, pad_batch, read_task_file, subset_per_class
from coursekit.textdistill import CachedTeacherLogits, hidden_state_loss, text_kd_loss_fn
from coursekit.textmodels import (
    TextClassifier,
    alternate_layers,
    count_text_macs,
    keep_layers,
    masked_mean,
    parameters_by_part,
    save_text_model,
    train_or_load_text,
)

needs_minilm = pytest.mark.skipif(offline_copy_dir(ENCODER) is None, reason="offline MiniLM copy not installed")


# ----------------------------------------------------------------------------- data

def test_read_task_file_parses_labels_and_latin1(tmp_path):
    f = tmp_path / "x.txt"
    f.write_bytes(b"1 a good film\n0 caf\xe9 was bad\n\n")
    texts, labels = read_task_file(f)
    assert labels == [1, 0] and texts == ["a good film", "café was bad"]
    f.write_text("positive a good film\n")
    with pytest.raises(ValueError, match="expected 'LABEL sentence'"):
        read_task_file(f)


def test_text_batches_pad_per_batch_cover_every_sentence_once_and_bucket(tiny_split):
    split = tiny_split(200)
    tb = TextBatches(split, 8, pad_id=0, shuffle=True, seed=3)
    seen = []
    for x, _ in tb:
        lens = (x != 0).sum(1)
        assert x.shape[1] == int(lens.max()), "padded only to the batch's longest sentence"
        seen += [tuple(r[r != 0].tolist()) for r in x]
    assert sorted(seen) == sorted(tuple(t.tolist()) for t in split.ids), "each sentence exactly once per pass"
    first, second = [x.shape[1] for x, _ in tb], [x.shape[1] for x, _ in tb]
    assert first != second, "a new order every pass"
    random = TextBatches(split, 8, pad_id=0, shuffle=True, seed=3, bucket=1).padding_share()
    assert TextBatches(split, 8, pad_id=0, shuffle=True, seed=3).padding_share() < random
    assert TextBatches(split, 8, pad_id=0).padding_share() <= TextBatches(split, 8, pad_id=0, shuffle=True).padding_share()
    with pytest.raises(ValueError, match="batch_size: 0 is not allowed"):
        TextBatches(split, 0, pad_id=0)


def test_same_seed_same_batches_and_subset_per_class(tiny_split):
    split = tiny_split(100)
    a = [x for x, _ in TextBatches(split, 8, pad_id=0, shuffle=True, seed=5)]
    b = [x for x, _ in TextBatches(split, 8, pad_id=0, shuffle=True, seed=5)]
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    sub = subset_per_class(split, 3, seed=1)
    assert torch.bincount(sub.labels).tolist() == [3, 3]
    assert [t.tolist() for t in subset_per_class(split, 3, seed=1).ids] == [t.tolist() for t in sub.ids]
    assert subset_per_class(split, None) is split
    with pytest.raises(ValueError, match="labels_per_class: 0 is not allowed"):
        subset_per_class(split, 0)


def test_pad_batch():
    x = pad_batch([torch.tensor([1, 2, 3]), torch.tensor([4])], pad_id=0)
    assert x.tolist() == [[1, 2, 3], [4, 0, 0]]


def _write_sst2(root, n=20):
    (root / "sst2").mkdir(parents=True)
    for name in ("train", "dev", "test"):
        lines = [f"{i % 2} {'a good film' if i % 2 else 'a dull , bad film'} number {i}" for i in range(n)]
        (root / "sst2" / f"stsa.binary.{name}").write_text("\n".join(lines) + "\n")
    return root


@needs_minilm
def test_load_text_task_tokenises_once_and_reads_the_cache(tmp_path, monkeypatch):
    from coursekit.pretrained import load_tokenizer

    tok, _ = load_tokenizer("encoder")
    root = _write_sst2(tmp_path / "data")
    data = load_text_task("sst2", tok, data_dir=root, max_length=8, test_limit=5)
    assert len(data.train) == 20 and len(data.val) == 5 and len(data.test) == 5 and data.num_classes == 2
    assert data.train.ids[0][0].item() == tok.cls_token_id and max(len(t) for t in data.train.ids) <= 8
    calls = []
    monkeypatch.setattr(type(tok), "__call__", lambda *a, **k: calls.append(1))
    again = load_text_task("sst2", tok, data_dir=root, max_length=8)
    assert not calls, "the second load read the cache"
    assert [t.tolist() for t in again.train.ids] == [t.tolist() for t in data.train.ids]
    assert not list((root / "sst2").glob("*.pt")), "nothing written into the dataset folder"


@needs_minilm
def test_load_text_task_errors_and_trec_dev_split(tmp_path):
    from coursekit.pretrained import load_tokenizer

    tok, _ = load_tokenizer("encoder")
    with pytest.raises(ValueError, match="task: 'imdb' is not allowed"):
        load_text_task("imdb", tok, data_dir=tmp_path)
    (tmp_path / "sst2").mkdir()
    (tmp_path / "sst2" / "stsa.binary.train").write_text("1 good\n")
    with pytest.raises(FileNotFoundError, match=r"stsa.binary.dev, stsa.binary.test not found.*COURSEKIT_DATA"):
        load_text_task("sst2", tok, data_dir=tmp_path)  # a partial copy is never completed from the hub
    (tmp_path / "trec").mkdir()
    (tmp_path / "trec" / "TREC.train.all").write_text("".join(f"{i % 6} What is {i} ?\n" for i in range(60)))
    (tmp_path / "trec" / "TREC.test.all").write_text("".join(f"{i % 6} Who is {i} ?\n" for i in range(12)))
    data = load_text_task("trec", tok, data_dir=tmp_path, val_fraction=0.1, seed=0)
    assert data.num_classes == 6 and len(data.val) == 6 and len(data.train) == 54
    again = load_text_task("trec", tok, data_dir=tmp_path, val_fraction=0.1, seed=0)
    assert data.val.texts == again.val.texts, "the dev split is carved with the seed"
    assert not set(data.val.texts) & set(data.train.texts)


def _plant_hub_like_dataset(folder, splits, label_col, names=None):
    """A dataset folder as ``datasets`` reads it: one parquet file per split, with ClassLabel names when given."""
    from datasets import ClassLabel, Dataset, Features, Value

    folder.mkdir(parents=True)
    label = ClassLabel(names=names) if names else Value("int64")
    for split, rows in splits.items():
        ds = Dataset.from_dict({"text": [t for t, _ in rows], label_col: [y for _, y in rows]},
                               features=Features({"text": Value("string"), label_col: label}))
        ds.to_parquet(str(folder / f"{split}-00000-of-00001.parquet"))
    return folder


def test_download_text_task_renumbers_hub_labels_by_name_and_overwrites_nothing(tmp_path):
    """The hub path for real through ``datasets.load_dataset``, on a planted folder instead of the network: TREC's
    hub order (ABBR, ENTY, DESC, ...) is not ours (description, entity, abbreviation, ...)."""
    from coursekit.textdata import TASKS, download_text_task

    hub_names = ["ABBR", "ENTY", "DESC", "HUM", "LOC", "NUM"]
    rows = [(f"What  is question {i} ?", i % 6) for i in range(12)]
    planted = _plant_hub_like_dataset(tmp_path / "hub_trec", {"train": rows, "test": rows[:6]}, "coarse_label",
                                      hub_names)
    root = download_text_task("trec", tmp_path / "data", hub_id=str(planted))
    texts, labels = read_task_file(root / "TREC.train.all")
    assert texts[0] == "What is question 0 ?", "whitespace normalised, one sentence per line"
    ours = TASKS["trec"].classes
    for (_, hub_label), label in zip(rows, labels, strict=True):
        assert TASKS["trec"].hub_label_names[hub_names[hub_label]] == ours[label]
    assert labels[:3] == [ours.index("abbreviation"), ours.index("entity"), ours.index("description")]
    before = (root / "TREC.test.all").read_bytes()
    with pytest.raises(FileExistsError, match="not overwritten"):
        download_text_task("trec", tmp_path / "data", hub_id=str(planted))
    assert (root / "TREC.test.all").read_bytes() == before

    unlabelled = _plant_hub_like_dataset(tmp_path / "hub_sst2", {"train": [("fine", 1)], "validation": [("bad", 0)],
                                                                  "test": [("no label", -1)]}, "label")
    with pytest.raises(ValueError, match="split 'test' has label -1.*without labels"):
        download_text_task("sst2", tmp_path / "data2", hub_id=str(unlabelled))
    assert not (tmp_path / "data2" / "sst2").exists(), "nothing written when a split is unusable"


@needs_minilm
def test_missing_task_without_network_names_the_hub_and_the_data_dir(tmp_path):
    """Offline (HF_HUB_OFFLINE, HF_DATASETS_OFFLINE, an empty hub cache), an absent task fails with one
    FileNotFoundError that says what was tried, in a fresh process (datasets reads the flags at import)."""
    code = ("from coursekit.pretrained import load_tokenizer; from coursekit.textdata import load_text_task\n"
            "tok, _ = load_tokenizer('encoder')\n"
            "try:\n"
            f"    load_text_task('sst2', tok, data_dir={str(tmp_path / 'data')!r})\n"
            "except FileNotFoundError as err:\n"
            "    print('ERROR', err)\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert "ERROR sst2: stsa.binary.train" in out.stdout, out.stderr[-2000:]
    assert "fetching SetFit/sst2 from the hub failed" in out.stdout and "COURSEKIT_DATA" in out.stdout


# ----------------------------------------------------------------------------- model

def test_masked_mean_by_hand():
    h = torch.arange(12.0).view(1, 3, 4)
    assert masked_mean(h, torch.tensor([[1, 1, 0]]))[0].tolist() == ((h[0, 0] + h[0, 1]) / 2).tolist()


@pytest.mark.parametrize("pooling", ["mean", "cls", "cls_pooler"])
def test_text_classifier_logits_do_not_depend_on_padding(pooling, tiny_bert):
    model = TextClassifier(tiny_bert(), 3, pooling=pooling).eval()
    short, long = torch.tensor([1, 7, 8, 2]), torch.tensor([1, 9, 10, 11, 12, 13, 2])
    with torch.no_grad():
        alone = model(short[None])
        batch = model(pad_batch([short, long], 0))
    assert torch.allclose(alone[0], batch[0], atol=1e-5)


def test_text_classifier_rejects_bad_arguments(tiny_bert):
    with pytest.raises(ValueError, match="pooling: 'max' is not allowed"):
        TextClassifier(tiny_bert(), 2, pooling="max")
    with pytest.raises(ValueError, match="num_classes: 1 is not allowed"):
        TextClassifier(tiny_bert(), 1)


def test_parameters_by_part_add_up(tiny_bert):
    model = TextClassifier(tiny_bert(), 3)
    parts = parameters_by_part(model)
    assert sum(parts.values()) == count_params(model)
    assert parts["embeddings"] == (60 + 64 + 2) * 16 + 2 * 16 and parts["head"] == 16 * 3 + 3


def test_count_text_macs_matches_the_formula(tiny_bert):
    layers, H, ffn, L = 2, 16, 32, 10
    model = TextClassifier(tiny_bert(layers=layers, hidden=H, ffn=ffn), 3)
    per_layer = L * (4 * H * H + 2 * H * ffn) + 2 * L * L * H  # projections + FFN + scores and weighted sum
    pooler_and_head = H * H + H * 3  # the pooler runs in forward even when mean pooling ignores it
    assert count_text_macs(model, L) == layers * per_layer + pooler_and_head


def test_alternate_layers_and_keep_layers_copy_the_teachers_weights(tiny_bert):
    assert alternate_layers(6, 3) == [0, 2, 4] and alternate_layers(12, 6) == [0, 2, 4, 6, 8, 10]
    with pytest.raises(ValueError, match="student_layers: 7 is not allowed; use an integer from 1 to 6"):
        alternate_layers(6, 7)
    teacher = TextClassifier(tiny_bert(layers=4), 2).eval()
    student = keep_layers(teacher, [0, 2])
    assert student.num_layers == 2 and student.encoder.config.num_hidden_layers == 2 and teacher.num_layers == 4
    for s_i, t_i in ((0, 0), (1, 2)):
        for a, b in zip(student.encoder.encoder.layer[s_i].parameters(), teacher.encoder.encoder.layer[t_i].parameters(),
                        strict=True):
            assert torch.equal(a, b) and a.data_ptr() != b.data_ptr()
    assert torch.equal(student.head.weight, teacher.head.weight)
    with pytest.raises(ValueError, match="layers"):
        keep_layers(teacher, [0, 4])


def test_keep_every_layer_gives_identical_outputs(tiny_bert):
    teacher = TextClassifier(tiny_bert(layers=3), 2).eval()
    x = torch.randint(3, 60, (4, 9))
    with torch.no_grad():
        assert torch.equal(keep_layers(teacher, [0, 1, 2])(x), teacher(x))


def test_saved_text_model_reloads_in_a_fresh_process_with_identical_logits(tmp_path, tiny_bert):
    model = keep_layers(TextClassifier(tiny_bert(layers=4), 3, pooling="mean", pad_id=0), [1, 3]).eval()
    path = save_text_model(tmp_path / "m.pt", model, {"acc": 0.5})
    x = torch.randint(3, 60, (3, 7))
    with torch.no_grad():
        want = model(x)
    torch.save({"x": x, "y": want}, tmp_path / "io.pt")
    code = ("import sys, torch; from coursekit.textmodels import load_text_model; "
            f"m, metrics = load_text_model({str(path)!r}); d = torch.load({str(tmp_path / 'io.pt')!r}, weights_only=True); "
            "torch.load(" + repr(str(path)) + ", weights_only=True); "
            "sys.exit(0 if torch.equal(m(d['x']), d['y']) and metrics == {'acc': 0.5} and m.num_layers == 2 else 3)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


# ----------------------------------------------------------------------------- distillation

def test_kd_on_transformer_logits_equals_part_1s_kd_loss(tiny_bert, tiny_split):
    teacher = TextClassifier(tiny_bert(layers=4), 2).eval()
    student = keep_layers(teacher, [0, 2]).eval()
    split = tiny_split(30)
    cache = CachedTeacherLogits(teacher, split, pad_id=0, amp="off")
    x, y = next(iter(TextBatches(split, 10, pad_id=0, shuffle=True, seed=1)))
    with torch.no_grad():
        want = kd_loss(student(x), teacher(x), y, 3.0, 0.7)
        loss, _ = text_kd_loss_fn(cache, 3.0, 0.7)(student, x, y)
        assert torch.allclose(cache(x), teacher(x), atol=1e-5), "cached logits equal a live teacher"
    assert torch.allclose(loss, want, atol=1e-5)
    with pytest.raises(KeyError, match="not in the cached split"):
        cache(torch.tensor([[1, 59, 59, 59, 2]]))


def test_hidden_state_loss_by_hand_and_ignores_padding():
    g = torch.Generator().manual_seed(0)
    s = tuple(torch.randn(2, 5, 4, generator=g) for _ in range(3))
    t = tuple(torch.randn(2, 5, 4, generator=g) for _ in range(4))
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    m = mask.bool()
    want = 0.5 * sum((1 - F.cosine_similarity(s[i][m], t[j][m], dim=-1)).mean() for i, j in ((1, 1), (2, 3)))
    assert torch.allclose(hidden_state_loss(s, t, mask, {1: 1, 2: 3}), want)
    noisy = tuple(h.clone() for h in s)
    noisy[1][0, 4] += 100  # a padding position
    assert torch.allclose(hidden_state_loss(noisy, t, mask, {1: 1, 2: 3}), want)
    assert hidden_state_loss(t, t, mask, {2: 2}, kind="mse") == 0
    with pytest.raises(ValueError, match="kind: .l1. is not allowed; use cosine, mse"):
        hidden_state_loss(s, t, mask, {1: 1}, kind="l1")


def test_text_kd_with_hidden_states_trains_and_needs_the_teacher(tiny_bert, tiny_split):
    teacher = TextClassifier(tiny_bert(layers=4), 2).eval()
    split = tiny_split(16)
    cache = CachedTeacherLogits(teacher, split, pad_id=0, amp="off")
    with pytest.raises(ValueError, match="needs a layer_map and the teacher's hidden states"):
        text_kd_loss_fn(cache, hidden_weight=1.0, layer_map={1: 1})
    student = keep_layers(teacher, [0, 2]).train()
    fn = text_kd_loss_fn(cache, 2.0, 0.5, teacher=teacher, hidden_weight=1.0, layer_map={1: 1, 2: 3})
    x, y = next(iter(TextBatches(split, 8, pad_id=0)))
    loss, logits = fn(student, x, y)
    loss.backward()
    assert logits.shape == (8, 2) and student.encoder.encoder.layer[0].attention.self.query.weight.grad is not None
    assert all(p.grad is None for p in teacher.parameters()), "the teacher is never trained"


# ----------------------------------------------------------------------------- recipe and cache

def test_recipe_key_changes_with_every_field_and_only_then():
    base = Recipe(epochs=1, lr=1e-4, batch_size=32, seed=0, data={"task": "sst2"})
    assert base.key() == Recipe(epochs=1, lr=1e-4, batch_size=32, seed=0, data={"task": "sst2"}).key()
    changes = {"epochs": 2, "lr": 2e-4, "batch_size": 16, "seed": 1, "optimizer": "adamw", "schedule": "cosine",
               "weight_decay": 0.0, "label_smoothing": 0.1, "amp": "bf16", "channels_last": False,
               "frozen": ("encoder.embeddings",), "data": {"task": "trec"}, "version": 999}
    assert set(changes) == set(base.__dataclass_fields__), "every field is covered by this test"
    keys = {base.with_(**{k: v}).key() for k, v in changes.items()}
    assert len(keys) == len(changes) and base.key() not in keys


def test_recipe_fit_freezes_and_train_or_load_reuses_only_the_same_recipe(tmp_path, tiny_bert, tiny_split):
    split = tiny_split(16)
    batches = TextBatches(split, 8, pad_id=0, shuffle=True)
    recipe = Recipe(epochs=1, lr=1e-3, batch_size=8, seed=0, frozen=("encoder.embeddings.word_embeddings",))

    def build():
        return TextClassifier(tiny_bert(layers=2), 2)

    m1, info1, reused1 = train_or_load_text(tmp_path, "t", recipe, build, batches)
    assert not reused1 and info1["recipe"]["lr"] == 1e-3
    assert torch.equal(m1.encoder.embeddings.word_embeddings.weight, build().encoder.embeddings.word_embeddings.weight)
    assert not torch.equal(m1.head.weight, build().head.weight)
    m2, _, reused2 = train_or_load_text(tmp_path, "t", recipe, build, batches, attn_implementation="eager")
    assert m2.encoder.config._attn_implementation == "eager", "the reloaded model uses the asked attention kernel"
    assert reused2 and all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values(),
                                                                    strict=True))
    calls = []

    def counting_build():
        calls.append(1)
        return build()

    _, _, reused3 = train_or_load_text(tmp_path, "t", recipe.with_(lr=2e-3), counting_build, batches)
    assert not reused3 and calls, "a model trained under another recipe is not reused"
    assert len(list((tmp_path / "checkpoints").glob("t-*.pt"))) == 2


# ----------------------------------------------------------------------------- parameters given as text

def test_parse_lists_from_papermill_text():
    assert parse_int_list("label_sweep", "[8, 32]") == [8, 32] == parse_int_list("label_sweep", "8,32")
    assert parse_int_list("label_sweep", [4]) == [4] and parse_int_list("label_sweep", None) is None
    assert parse_str_list("target_classes", '["ship", "truck"]') == ["ship", "truck"]
    assert parse_str_list("target_classes", "ship, truck") == ["ship", "truck"]
    with pytest.raises(ValueError, match="label_sweep: 'a,b' is not allowed"):
        parse_int_list("label_sweep", "a,b")
    with pytest.raises(ValueError, match="not a valid JSON list"):
        parse_str_list("target_classes", "[ship, truck")


def test_cached_hidden_states_equal_a_live_teacher_and_give_the_same_loss(tiny_bert, tiny_split):
    teacher = TextClassifier(tiny_bert(layers=4), 2).eval()
    split = tiny_split(20)
    cache = CachedTeacherLogits(teacher, split, pad_id=0, amp="off", hidden_layers=(1, 3))
    x, y = next(iter(TextBatches(split, 8, pad_id=0, shuffle=True, seed=2)))
    with torch.no_grad():
        _, live, mask = teacher.forward_with_hidden(x)
        for t in (1, 3):
            m = mask.bool()
            assert torch.allclose(cache.hidden(x)[t][m], live[t][m], atol=0.05), "bf16 storage, same states"
        student = keep_layers(teacher, [0, 2]).eval()
        a, _ = text_kd_loss_fn(cache, 2.0, 0.5, hidden_weight=1.0, layer_map={1: 1, 2: 3})(student, x, y)
        plain = CachedTeacherLogits(teacher, split, pad_id=0, amp="off")  # no states: the teacher runs live
        b, _ = text_kd_loss_fn(plain, 2.0, 0.5, teacher=teacher, hidden_weight=1.0, layer_map={1: 1, 2: 3})(student, x, y)
    assert abs(float(a) - float(b)) < 1e-2
    with pytest.raises(ValueError, match="no hidden states were cached"):
        CachedTeacherLogits(teacher, split, pad_id=0, amp="off").hidden(x)
