import copy

import pytest
import torch

from coursekit.checkpoints import load_checkpoint, save_checkpoint, train_or_load
from coursekit.modelcache import config_key
from coursekit.models import build_model
from coursekit.train import evaluate, fit

SPEC = {"name": "resnet_cifar", "num_classes": 2, "blocks": [1, 1, 1], "width": 4, "stem_pool": True}


def _model():
    spec = dict(SPEC)
    return build_model(spec.pop("name"), **spec)


def test_fit_learns_a_separable_task_and_returns_history(toy_batches):
    torch.manual_seed(0)
    model = _model()
    hist = fit(model, toy_batches(batch_size=16, shuffle=True, augment=True), epochs=3, lr=0.05, amp="off",
               val_batches=toy_batches(seed=1, batch_size=32), progress=False, label_smoothing=0.1)
    assert set(hist) == {"epoch", "train_loss", "train_acc", "val_acc", "lr", "time_s"}
    assert hist["epoch"] == [1, 2, 3] and len(hist["val_acc"]) == 3
    assert hist["train_loss"][-1] < hist["train_loss"][0]
    after = evaluate(model, toy_batches(seed=1, batch_size=32), amp="off")
    assert after["accuracy"] >= 0.9 and after["n"] == 64
    assert hist["val_acc"][-1] == after["accuracy"], "the history's last validation accuracy is this evaluation"


def test_fit_with_cosine_adamw_and_custom_loss(toy_batches):
    calls = []

    def loss_fn(m, x, y):
        calls.append(len(y))
        logits = m(x)
        return torch.nn.functional.cross_entropy(logits, y), logits

    hist = fit(_model(), toy_batches(batch_size=32), epochs=1, lr=1e-3, optimizer="adamw", schedule="cosine",
               amp="off", loss_fn=loss_fn, progress=False)
    assert calls == [32, 32] and hist["val_acc"] == [None]


@pytest.mark.parametrize("kwargs,match", [
    ({"epochs": 0}, "epochs: 0 is not allowed"),
    ({"epochs": 1, "optimizer": "lbfgs"}, "optimizer: 'lbfgs' is not allowed"),
    ({"epochs": 1, "schedule": "step"}, "schedule: 'step' is not allowed"),
    ({"epochs": 1, "label_smoothing": 1.5}, r"label_smoothing: 1.5 is not allowed; use a number in \[0, 1\)"),
    ({"epochs": 1, "lr": 0}, "lr: 0 is not allowed"),
])
def test_fit_refuses_bad_arguments_before_training(kwargs, match, toy_batches):
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    kwargs.setdefault("lr", 0.1)
    with pytest.raises(ValueError, match=match):
        fit(model, toy_batches(batch_size=16), progress=False, **kwargs)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "nothing was trained"


def test_flip_tta_averages_the_mirror_by_hand_and_restores_train_mode(toy_batches):
    from coursekit.train import FlipTTA, predict_logits

    model = _model().train()
    batches = list(toy_batches(batch_size=64))
    logits, y = predict_logits(model, batches, amp="off", tta=True)
    assert model.training, "evaluation put the model back in train mode"
    model.eval()
    with torch.no_grad():
        by_hand = torch.cat([0.5 * (model(x) + model(torch.flip(x, dims=[3]))) for x, _ in batches])
        plain = torch.cat([model(x) for x, _ in batches])
        assert torch.allclose(FlipTTA(model)(batches[0][0]), by_hand[:64], atol=1e-6)
    assert torch.allclose(logits, by_hand, atol=1e-6) and not torch.allclose(logits, plain, atol=1e-3)
    out = evaluate(model, batches, amp="off", tta=True)
    assert out["accuracy"] == (by_hand.argmax(1) == y).float().mean().item()


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path, toy_batches):
    model = _model()
    fit(model, toy_batches(batch_size=16), epochs=1, lr=0.05, amp="off", progress=False)
    model.eval()
    path = save_checkpoint(tmp_path / "m.pt", model, SPEC, {"seed": 0}, {"accuracy": 0.5})
    loaded, info = load_checkpoint(path)
    x = torch.randn(3, 3, 16, 16)
    assert torch.equal(model(x), loaded(x))
    assert info["config"] == {"seed": 0} and info["metrics"]["accuracy"] == 0.5
    raw = torch.load(path, weights_only=True)  # plain tensors and JSON types only
    assert raw["spec"] == SPEC


def test_train_or_load_trains_once_per_config(tmp_path):
    calls = []

    def train():
        calls.append(1)
        return _model(), {"accuracy": 0.75}

    config = {"spec": SPEC, "epochs": 1, "seed": 0}
    m1, info1, reused1 = train_or_load(tmp_path, "base", config, train)
    m2, info2, reused2 = train_or_load(tmp_path, "base", dict(config), train)
    assert calls == [1] and (reused1, reused2) == (False, True)
    assert info2["metrics"] == {"accuracy": 0.75}
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(m1(x), m2(x))
    train_or_load(tmp_path, "base", {**config, "seed": 1}, train)
    assert calls == [1, 1], "another config trains another model"
    assert config_key(config) == config_key({"seed": 0, "epochs": 1, "spec": SPEC}), "key order does not matter"
    with pytest.raises(ValueError, match="spec"):
        train_or_load(tmp_path, "base", {"epochs": 1}, train)


def test_lr_schedules_start_peak_and_end_where_documented():
    from coursekit.train import lr_factor

    assert lr_factor(0, 100) == pytest.approx(0.1) and lr_factor(25, 100) == pytest.approx(1.0)
    assert lr_factor(100, 100) == pytest.approx(0.001)
    assert lr_factor(0, 100, "cosine") == 1.0 and lr_factor(100, 100, "cosine") == pytest.approx(0.0)
    assert 0 < lr_factor(0, 1) <= 1 and 0 < lr_factor(1, 1) <= 1, "one step is fine"


def test_session_base_model_is_trained_once_per_run_dir(tmp_path):
    """Later chapters get 00_baseline's model from the run dir instead of training it again."""
    from coursekit import session as session_mod
    from coursekit.data import DataSplits

    S = session_mod.start_session("test", profile="smoke", run_dir=str(tmp_path), print_report=False)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (40, 3, 16, 16), dtype=torch.uint8, generator=g)
    y = torch.arange(40) % 2
    splits = DataSplits("toy", ["a", "b"], x[:30], y[:30], x[30:], y[30:], x[30:], y[30:], torch.full((3,), 0.5),
                        torch.full((3,), 0.25))
    m1, info1, reused1 = S.images.base_model(splits, progress=False)
    m2, info2, reused2 = S.images.base_model(splits, progress=False)
    assert (reused1, reused2) == (False, True)
    assert info1["config"]["spec"]["num_classes"] == 2 and info1["config"]["recipe"]["data"]["n_train"] == 30
    xb = torch.randn(2, 3, 16, 16)
    assert torch.equal(m1(xb), m2(xb))
    assert len(list((tmp_path / "checkpoints").glob("base-*.pt"))) == 1


def test_channels_last_is_skipped_for_tiny_convs_on_cpu(toy_batches):
    from coursekit.models import ResNetCifar
    from coursekit.train import channels_last_is_safe

    assert channels_last_is_safe(ResNetCifar((1, 1, 1), 16), "cpu")
    assert not channels_last_is_safe(ResNetCifar((1, 1, 1), 8), "cpu"), "8-channel strided 1x1 shortcut"
    assert not channels_last_is_safe(ResNetCifar((1, 1, 1), 4), "cpu")
    assert channels_last_is_safe(ResNetCifar((1, 1, 1), 4), "cuda")
    model = ResNetCifar((1, 1, 1), 4, 2)
    fit(model, toy_batches(batch_size=16, channels_last=True), epochs=1, lr=0.05, amp="off", progress=False)
    assert model.layer2[0].shortcut[0].weight.is_contiguous(), "trained in NCHW"


def test_fit_writes_scalars_and_the_graph_to_tensorboard_event_files(tmp_path, toy_batches, read_tensorboard):
    """The event files hold every epoch's scalars with the values of the history, the per-step loss and the
    model's graph (its conv nodes); tracing the graph leaves BatchNorm statistics as training alone leaves them."""
    from coursekit.models import ResNetCifar

    torch.manual_seed(0)
    logged = ResNetCifar((1, 1, 1), 4, num_classes=2)
    plain = copy.deepcopy(logged)
    kw = dict(epochs=2, lr=0.1, amp="off", progress=False)
    hist = fit(logged, toy_batches(n=32, batch_size=8), val_batches=toy_batches(n=16, seed=1, batch_size=8),
               log_dir=tmp_path / "tb", **kw)
    fit(plain, toy_batches(n=32, batch_size=8), val_batches=toy_batches(n=16, seed=1, batch_size=8), **kw)
    scalars, has_graph, acc = read_tensorboard(tmp_path / "tb")
    for tag in ("train_loss", "train_acc", "val_acc", "lr"):
        assert [s for s, _ in scalars[tag]] == [1, 2], tag
        assert [v for _, v in scalars[tag]] == pytest.approx(hist[tag], rel=1e-5), tag
    assert [s for s, _ in scalars["train_loss_step"]] == [8], "8 steps: logged at the last one"
    assert has_graph
    graph = acc.Graph()
    assert any("Conv2d" in n.name or "conv" in n.op.lower() for n in graph.node), "the graph has the model's convs"
    for a, b in zip(logged.state_dict().values(), plain.state_dict().values(), strict=True):
        assert torch.equal(a, b), "logging changed the training"


def test_fit_without_the_tensorboard_extra_says_how_to_install_it(tmp_path, monkeypatch, toy_batches):
    import sys

    from coursekit.models import ResNetCifar
    from coursekit.train import fit

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails, as without the extra
    with pytest.raises(ImportError, match=r"pip install -e \"\.\[tensorboard\]\""):
        fit(ResNetCifar((1, 1, 1), 4, num_classes=2), toy_batches(n=32, batch_size=16), epochs=1, lr=0.1, log_dir=tmp_path,
            progress=False)


def test_training_an_8_channel_resnet_on_odd_batches_does_not_crash():
    """Regression: channels_last backward of the 8-channel strided 1x1 shortcut corrupted memory (oneDNN, AVX-512)
    with batches of 9; run in a child process, since the bug kills the process."""
    import subprocess
    import sys

    code = ("import torch; from coursekit.data import Batches; from coursekit.models import ResNetCifar; "
            "from coursekit.train import fit; g = torch.Generator().manual_seed(0); "
            "x = torch.randint(0, 255, (27, 3, 32, 32), dtype=torch.uint8, generator=g); y = torch.randint(0, 5, (27,), generator=g); "
            "b = Batches(x, y, torch.full((3,), 0.5), torch.full((3,), 0.25), 9, channels_last=True); "
            "fit(ResNetCifar((1, 1, 1), 8, 5, stem_pool=True), b, epochs=3, lr=0.1, progress=False); print('ok')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-1000:]


def test_a_dry_run_stops_every_fit_after_its_steps(monkeypatch):
    import torch
    from torch import nn

    from coursekit.train import fit

    torch.manual_seed(0)
    batches = [(torch.randn(4, 3), torch.randint(0, 2, (4,))) for _ in range(5)]
    steps = []
    monkeypatch.setenv("COURSEKIT_DRY_RUN", "3")
    history = fit(nn.Linear(3, 2), batches, epochs=4, lr=0.1, amp="off", channels_last=False, progress=False,
                  on_step=lambda step, total, model: steps.append((step, total)))
    assert steps == [(1, 20), (2, 20), (3, 20)] and history["epoch"] == [1]
    monkeypatch.delenv("COURSEKIT_DRY_RUN")
    steps.clear()
    fit(nn.Linear(3, 2), batches, epochs=2, lr=0.1, amp="off", channels_last=False, progress=False,
        on_step=lambda step, total, model: steps.append(step))
    assert steps == list(range(1, 11))
