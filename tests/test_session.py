import pytest
import torch

from coursekit import imagework
from coursekit.ledger import read_ledger
from coursekit.models import ResNetCifar
from coursekit.session import start_session


def test_record_all_measures_side_by_side_and_appends_one_record_each(tmp_path):
    S = start_session("99_test", profile="smoke", run_dir=str(tmp_path / "run"), print_report=False)
    big, small = ResNetCifar((1, 1, 1), 16, num_classes=2), ResNetCifar((1, 1, 1), 4, num_classes=2)
    recs = S.images.record_all([{"model": big, "stage": "s", "name": "big", "accuracy": 0.9},
                         {"model": small, "stage": "s", "name": "small", "accuracy": 0.8, "extra": {"k": 1}}])
    assert list(recs) == ["big", "small"]
    on_disk = read_ledger(tmp_path / "run", notebook="99_test")
    assert [r["model"] for r in on_disk] == ["big", "small"] and on_disk[1]["extra"] == {"k": 1}
    keys = {f"cpu_b{b}" for b in S.profile.latency_batch_sizes}
    assert all(set(r["latency_ms"]) == keys and min(r["latency_ms"].values()) > 0 for r in on_disk)
    assert recs["big"]["macs"] > recs["small"]["macs"]
    from coursekit.metrics import state_dict_bytes  # compressed side by side, each its own measurement

    assert [(r["size_bytes"], r["size_gzip_bytes"]) for r in on_disk] == [tuple(state_dict_bytes(m).values())
                                                                          for m in (big, small)]
    with pytest.raises(ValueError, match="unique"):
        S.images.record_all([{"model": big, "stage": "s", "name": "x", "accuracy": 0.1}] * 2)


def test_copies_of_one_architecture_share_one_latency(tmp_path):
    """Latency belongs to the computation: two models of one architecture (other weights) get the figure of one
    measurement, so noise cannot make them differ (04 once showed 2.48 and 3.18 ms for one architecture)."""
    from coursekit.recorder import same_architecture

    S = start_session("99_test", profile="smoke", run_dir=str(tmp_path / "run"), print_report=False)
    a, b = ResNetCifar((1, 1, 1), 8, num_classes=2), ResNetCifar((1, 1, 1), 8, num_classes=2)
    c = ResNetCifar((1, 1, 1), 4, num_classes=2)
    assert same_architecture({"a": a, "c": c, "b": b}) == {"a": "a", "c": "c", "b": "a"}
    recs = S.images.record_all([{"model": m, "stage": "s", "name": n, "accuracy": 0.5} for n, m in (("a", a), ("b", b), ("c", c))],
                        rounds=1)
    assert recs["a"]["latency_ms"] == recs["b"]["latency_ms"] != recs["c"]["latency_ms"]
    assert recs["b"]["extra"] == {"latency_measured_on": "a"} and recs["a"]["extra"] == {}


def test_record_text_times_each_architecture_once_and_writes_part2_fields(tmp_path, tiny_bert):
    from coursekit.textmodels import TextClassifier, count_text_macs, keep_layers
    S = start_session("99_text", profile="smoke", run_dir=str(tmp_path / "run"), dataset="sst2", print_report=False)
    a = TextClassifier(tiny_bert(layers=2), 2)
    b = TextClassifier(tiny_bert(layers=2), 2)  # same shapes as a
    c = keep_layers(a, [0])  # another architecture
    recs = S.text.record_text([{"model": m, "stage": "t", "name": n, "accuracy": 0.5} for n, m in
                          (("a", a), ("b", b), ("c", c))], task="sst2", rounds=1)
    key = f"cpu_b{S.profile.text_latency_batch}_s{S.profile.text_latency_seq}"
    assert recs["a"]["latency_ms"] == recs["b"]["latency_ms"] and set(recs["c"]["latency_ms"]) == {key}
    assert recs["b"]["extra"]["latency_measured_on"] == "a" and "latency_measured_on" not in recs["c"]["extra"]
    assert recs["c"]["macs"] == count_text_macs(c, S.profile.text_latency_seq) < recs["a"]["macs"]
    on_disk = read_ledger(tmp_path / "run", notebook="99_text")
    assert all(r["task"] == "sst2" and r["perplexity"] is None and r["dataset"] == "sst2" for r in on_disk)


def test_train_text_runs_the_recipe_for_steps_or_epochs(tmp_path, tiny_bert, tiny_split):
    from coursekit.textdata import TextBatches
    from coursekit.textmodels import TextClassifier
    S = start_session("99_text", profile="smoke", run_dir=str(tmp_path / "run"), dataset="sst2", print_report=False)
    split = tiny_split(32)
    model = TextClassifier(tiny_bert(layers=1), 2)
    before = model.encoder.embeddings.word_embeddings.weight.clone()
    hist, secs = S.text.train_text(model, split, 0, lr=1e-3, seed=0, steps=8, batch_size=8,
                              frozen=("encoder.embeddings.word_embeddings",))
    assert hist["epoch"] == [1, 2] and secs > 0, "8 steps of 4 batches per epoch = 2 epochs"
    assert torch.equal(model.encoder.embeddings.word_embeddings.weight, before)
    with pytest.raises(ValueError, match="give epochs or steps"):
        S.text.train_text(model, split, 0, lr=1e-3, seed=0)
    assert len(TextBatches(split, 8, pad_id=0)) == 4


def test_cache_key_of_the_base_model_covers_every_training_setting(tmp_path, monkeypatch, imagefolder):
    """Part 1's run-dir cache: a change to any setting that shapes the weights (schedule, data, resolved autocast,
    channels_last, recipe version) gives another key; the same settings give the same key."""
    from coursekit import env
    from coursekit.modelcache import config_key
    root = imagefolder(tmp_path / "imgs", per_class=5)
    common = dict(profile="smoke", run_dir=str(tmp_path / "run"), dataset=f"imagefolder:{root}", print_report=False)

    def key(**overrides):
        S = start_session("99_key", **common, **overrides)
        return config_key(S.images.base_config(S.images.load_data()))

    base = key()
    assert key() == base
    changed = {"epochs": 2, "lr": 0.1, "weight_decay": 1e-4, "label_smoothing": 0.0, "batch_size": 32, "crop_pad": 4,
               "channels_last": False, "val_fraction": 0.4, "train_per_class": 3,
               "base_model": {"name": "resnet_cifar", "blocks": [1, 1, 1], "width": 6, "stem_pool": True}}
    keys = {name: key(**{name: value}) for name, value in changed.items()}
    assert all(k != base for k in keys.values()), {n: k for n, k in keys.items() if k == base}
    assert len(set(keys.values())) == len(keys)
    env._cpu_bf16_is_faster.cache_clear()
    monkeypatch.setattr(env, "_cpu_bf16_is_faster", lambda: False)  # "auto" resolves to fp32 on this machine
    fp32 = key(amp="auto")
    monkeypatch.setattr(env, "_cpu_bf16_is_faster", lambda: True)  # ... and to bf16 on another
    assert key(amp="auto") != fp32
    from coursekit.recipe import RECIPE_VERSION

    S = start_session("99_key", **common)
    cfg = S.images.base_config(S.images.load_data())
    assert cfg["recipe"]["version"] == RECIPE_VERSION, "the training code's version is part of the key"
    cfg["recipe"]["version"] += 1
    assert config_key(cfg) != base


def test_latency_table_is_the_one_measurement_behind_every_comparison(tmp_path):
    S = start_session("99_lat", profile="smoke", run_dir=str(tmp_path / "run"), print_report=False)
    models = {"a": ResNetCifar((1, 1, 1), width=4), "b": ResNetCifar((1, 1, 1), width=8)}
    table = S.recorder.latency_table(models, [1, 8], rounds=1)
    assert set(table) == {"a", "b"} and set(table["a"]) == {"cpu_b1", "cpu_b8"}  # no GPU here: CPU keys only
    assert all(v > 0 for row in table.values() for v in row.values())
    text = S.recorder.latency_table({"t": torch.nn.Embedding(50, 4)}, [2], input_fn=lambda b: torch.zeros(b, 5, dtype=torch.long),
                           key_suffix="_s5", rounds=1)
    assert set(text["t"]) == {"cpu_b2_s5"}


def test_paired_test_counts_the_examples_only_one_model_gets_right(tmp_path, imagefolder, monkeypatch):
    """Predictions on the same 40 examples: A right on 30, B right on 20, and A alone right on 12, B alone on 2. The
    discordant counts, the difference in points and the verdict follow; identical models give p = 1, no winner."""

    root = imagefolder(tmp_path / "imgs", classes=("a", "b"), per_class=3)
    S = start_session("99_paired", profile="smoke", run_dir=str(tmp_path / "run"), dataset=f"imagefolder:{root}",
                      print_report=False)
    y = torch.zeros(40, dtype=torch.long)
    right_a = torch.tensor([1] * 18 + [1] * 12 + [0] * 2 + [0] * 8, dtype=torch.bool)  # 18 both, 12 A only, 2 B only
    right_b = torch.tensor([1] * 18 + [0] * 12 + [1] * 2 + [0] * 8, dtype=torch.bool)

    def fake_predict(model, batches, **kw):  # class 0 is right: logits [1, 0] where the model is right
        right = right_a if model == "A" else right_b
        return torch.stack([right.float(), (~right).float()], 1), y

    monkeypatch.setattr(imagework, "predict_logits", fake_predict)
    res = S.images.paired_test("A", "B", S.images.load_data(), names=("kd", "plain"))
    assert (res["a_only"], res["b_only"]) == (12, 2) and res["difference"] == pytest.approx(25.0)
    assert res["p_value"] == pytest.approx(2 * sum(__import__("math").comb(14, i) for i in range(3)) / 2**14)
    assert res["p_value"] < 0.05 and "kd is better" in res["text"] and "+25.00 points on 40 test images" in res["text"]
    same = S.images.paired_test("A", "A", S.images.load_data())
    assert same["p_value"] == 1.0 and "within the noise" in same["text"]


def test_ledger_latencies_take_the_profiles_rounds_unless_told(tmp_path, monkeypatch):
    """record_all and record time in the profile's latency_rounds (1 on smoke, 3 on cpu and gpu), through the one
    policy (metrics.latency_medians -> compare_latency); a chapter's own rounds win."""
    import coursekit.metrics as metrics_module
    from coursekit.profiles import PROFILES

    assert (PROFILES["smoke"]["latency_rounds"], PROFILES["cpu"]["latency_rounds"], PROFILES["gpu"]["latency_rounds"]) \
        == (1, 3, 3)
    asked = []
    real = metrics_module.compare_latency
    monkeypatch.setattr(metrics_module, "compare_latency", lambda *a, rounds, **k: asked.append(rounds) or real(*a, rounds=1, **k))
    S = start_session("99_test", profile="smoke", run_dir=str(tmp_path / "run"), print_report=False)
    m = ResNetCifar((1, 1, 1), 4, num_classes=2)
    S.images.record_all([{"model": m, "stage": "s", "name": "a", "accuracy": 0.5}])
    S.images.record_all([{"model": m, "stage": "s", "name": "b", "accuracy": 0.5}], rounds=5)
    monkeypatch.setitem(S.profile.__dict__, "latency_rounds", 3)  # as on the cpu profile
    rec = S.images.record(m, stage="s", name="c", accuracy=0.5)
    assert asked == [1, 5, 3] and set(rec["latency_ms"]) == {"cpu_b1", "cpu_b8"}


def test_a_numeric_target_never_stops_a_run_on_data_it_was_not_set_for(tmp_path, imagefolder, capsys):
    """On the user's own images (cpu profile) the chapter's exercise reports its measurements and judges nothing:
    the targets were set for CIFAR-10. On CIFAR-10 the cpu profile judges both targets, the gpu profile the size."""
    from torch import nn

    from coursekit import checks
    from coursekit.profiles import PROFILES
    from coursekit.session import start_session

    root = imagefolder(tmp_path / "ants_bees", classes=("ants", "bees"))
    S = start_session("01_transfer_learning", profile="cpu", run_dir=str(tmp_path / "run"),
                      dataset=f"imagefolder:{root}", print_report=False)
    assert S.profile.exercise_judge == "none"
    assert S.report["exercise_targets"] == f"set for cifar10: on imagefolder:{root} reported, not judged"
    big, small = nn.Linear(10, 10), nn.Linear(10, 5)
    out = checks.check_target(small, reference=big, size="params", max_size=0.1, accuracy_of=lambda m: 0.4,
                              reference_accuracy=0.8, max_drop=-5.0, judge=S.profile.exercise_judge)  # misses both
    assert out["drop_points"] == pytest.approx(40.0) and "reported, not judged" in capsys.readouterr().out
    cifar = start_session("01_transfer_learning", profile="cpu", run_dir=str(tmp_path / "run"), print_report=False)
    assert cifar.profile.exercise_judge == "all" and "exercise_targets" not in cifar.report
    assert PROFILES["gpu"]["exercise_judge"] == "size", "no GPU run has measured the accuracy targets"


def test_text_teacher_trains_once_per_recipe_and_is_reused(tmp_path, tiny_bert, tiny_split):
    """Session.text_teacher (07's fine-tuned model, 08's and 09's teacher): trained with the profile's text recipe,
    token embeddings frozen, saved under the recipe's key; the same call again loads it (identical logits)."""
    from types import SimpleNamespace

    import torch

    from coursekit.session import start_session
    from coursekit.textdata import TextSplits
    from coursekit.textmodels import TextClassifier

    S = start_session("07_transformer_transfer", profile="smoke", run_dir=str(tmp_path / "run"), dataset="sst2",
                      print_report=False)
    splits = TextSplits("sst2", ("negative", "positive"), tiny_split(n=32), tiny_split(n=8, seed=1),
                        tiny_split(n=8, seed=2), pad_id=0)
    where = SimpleNamespace(path="tiny-bert", gguf_file=None)
    built = []

    def build():
        built.append(1)
        return TextClassifier(tiny_bert(layers=2), 2)

    first, info, reused = S.text.text_teacher(splits, build, where, progress=False)
    embeddings_before = build().encoder.embeddings.word_embeddings.weight
    assert not reused and info["recipe"]["frozen"] == ["encoder.embeddings.word_embeddings"]
    assert torch.equal(first.encoder.embeddings.word_embeddings.weight, embeddings_before), "the token table was frozen"
    second, _, reused = S.text.text_teacher(splits, build, where, progress=False)
    assert reused and len(built) == 2, "the second call loaded the checkpoint instead of building and training"
    x = torch.tensor([[1, 7, 9, 2, 0]])
    with torch.no_grad():
        torch.testing.assert_close(first(x), second(x))


@pytest.mark.notebook
def test_source_model_is_trained_once_on_the_source_classes_and_reused(tmp_path, cifar_dir):
    """Session.source_model (01's source, 06's start): the base architecture trained on CIFAR-10's source classes
    with the profile's recipe, reused from the run dir by a second call with the same classes."""
    from coursekit.session import start_session

    S = start_session("01_transfer_learning", profile="smoke", run_dir=str(tmp_path / "run"), data_dir=cifar_dir,
                      print_report=False)
    model, info, reused, data = S.images.source_model(["airplane", "ship"], progress=False)
    assert not reused and list(data.classes) == ["airplane", "ship"] and model.fc.out_features == 2
    assert info["config"]["recipe"]["epochs"] == S.profile.source_epochs
    again, _, reused, _ = S.images.source_model(["airplane", "ship"], progress=False)
    assert reused and all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values(),
                                                            strict=True))


@pytest.mark.parametrize("override,message", [
    ({"base_model": {"name": "resnet_cifar", "depth": 3}}, r"base_model: resnet_cifar takes no argument\(s\) \['depth'\]"),
    ({"student_model": {"name": "vgg"}}, "student_model: .* is not allowed; use a dict with 'name' one of resnet_cifar"),
])
def test_a_model_spec_that_no_builder_takes_is_refused_at_setup(tmp_path, override, message):
    """The profile table checks a spec's shape (core); the session checks it against Part 1's builders."""
    with pytest.raises(ValueError, match=message):
        start_session("99_spec", profile="smoke", run_dir=str(tmp_path / "run"), print_report=False, **override)
    assert not (tmp_path / "run").exists(), "refused before the run dir was made"
