import pytest
import torch

from coursekit.data import Batches
from coursekit.models import build_model
from coursekit.train import config_key, evaluate, fit, load_checkpoint, save_checkpoint, train_or_load

SPEC = {"name": "resnet_cifar", "num_classes": 2, "blocks": [1, 1, 1], "width": 4, "stem_pool": True}


def _toy_batches(n=64, seed=0, **kw):
    """Two classes a small CNN separates easily: bright vs dark images."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = (torch.rand(n, 3, 16, 16, generator=g) * 100 + 120 * y.view(-1, 1, 1, 1)).to(torch.uint8)
    return Batches(x, y, torch.full((3,), 0.45), torch.full((3,), 0.25), **kw)


def _model():
    spec = dict(SPEC)
    return build_model(spec.pop("name"), **spec)


def test_fit_learns_a_separable_task_and_returns_history():
    torch.manual_seed(0)
    model = _model()
    before = evaluate(model, _toy_batches(seed=1, batch_size=32))["accuracy"]
    hist = fit(model, _toy_batches(batch_size=16, shuffle=True, augment=True), epochs=3, lr=0.05, amp="off",
               val_batches=_toy_batches(seed=1, batch_size=32), progress=False, label_smoothing=0.1)
    assert set(hist) == {"epoch", "train_loss", "train_acc", "val_acc", "lr", "time_s"}
    assert hist["epoch"] == [1, 2, 3] and len(hist["val_acc"]) == 3
    assert hist["train_loss"][-1] < hist["train_loss"][0]
    after = evaluate(model, _toy_batches(seed=1, batch_size=32))
    assert after["accuracy"] >= 0.9 and after["accuracy"] > before - 1e-9 and after["n"] == 64


def test_fit_with_cosine_adamw_and_custom_loss():
    calls = []

    def loss_fn(m, x, y):
        calls.append(len(y))
        logits = m(x)
        return torch.nn.functional.cross_entropy(logits, y), logits

    hist = fit(_model(), _toy_batches(batch_size=32), epochs=1, lr=1e-3, optimizer="adamw", schedule="cosine",
               amp="off", loss_fn=loss_fn, progress=False)
    assert calls == [32, 32] and hist["val_acc"] == [None]


@pytest.mark.parametrize("kwargs,match", [
    ({"epochs": 0}, "epochs: 0 is not allowed"),
    ({"epochs": 1, "optimizer": "lbfgs"}, "optimizer: unknown value 'lbfgs'"),
    ({"epochs": 1, "schedule": "step"}, "schedule: unknown value 'step'"),
    ({"epochs": 1, "label_smoothing": 1.5}, r"label_smoothing: 1.5 is outside the allowed range \[0, 1\)"),
    ({"epochs": 1, "lr": 0}, "lr: 0 is not allowed"),
])
def test_fit_refuses_bad_arguments_before_training(kwargs, match):
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    kwargs.setdefault("lr", 0.1)
    with pytest.raises(ValueError, match=match):
        fit(model, _toy_batches(batch_size=16), progress=False, **kwargs)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "nothing was trained"


def test_evaluate_with_flip_tta_and_restores_train_mode():
    model = _model().train()
    out = evaluate(model, _toy_batches(batch_size=64), tta=True)
    assert 0.0 <= out["accuracy"] <= 1.0 and model.training


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path):
    model = _model()
    fit(model, _toy_batches(batch_size=16), epochs=1, lr=0.05, amp="off", progress=False)
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
    m1, info1, reused1 = S.base_model(splits, progress=False)
    m2, info2, reused2 = S.base_model(splits, progress=False)
    assert (reused1, reused2) == (False, True)
    assert info1["config"]["spec"]["num_classes"] == 2 and info1["config"]["recipe"]["data"]["n_train"] == 30
    xb = torch.randn(2, 3, 16, 16)
    assert torch.equal(m1(xb), m2(xb))
    assert len(list((tmp_path / "checkpoints").glob("base-*.pt"))) == 1


def test_channels_last_is_skipped_for_tiny_convs_on_cpu():
    from coursekit.models import ResNetCifar
    from coursekit.train import channels_last_is_safe

    assert channels_last_is_safe(ResNetCifar((1, 1, 1), 16), "cpu")
    assert not channels_last_is_safe(ResNetCifar((1, 1, 1), 8), "cpu"), "8-channel strided 1x1 shortcut"
    assert not channels_last_is_safe(ResNetCifar((1, 1, 1), 4), "cpu")
    assert channels_last_is_safe(ResNetCifar((1, 1, 1), 4), "cuda")
    model = ResNetCifar((1, 1, 1), 4, 2)
    fit(model, _toy_batches(batch_size=16, channels_last=True), epochs=1, lr=0.05, amp="off", progress=False)
    assert model.layer2[0].shortcut[0].weight.is_contiguous(), "trained in NCHW"


def _tiny_batches():
    from coursekit.data import Batches

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 255, (32, 3, 8, 8), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 2, (32,), generator=g)
    return Batches(x, y, torch.full((3,), 0.5), torch.full((3,), 0.25), 16)


def test_fit_logs_scalars_per_epoch_to_tensorboard(tmp_path, monkeypatch):
    """With a log dir, every epoch's loss, accuracy and lr go to a SummaryWriter (faked here: the extra is optional)."""
    import sys
    import types

    from coursekit.models import ResNetCifar
    from coursekit.train import fit

    written = []

    class FakeWriter:
        def __init__(self, log_dir):
            written.append(("open", log_dir))

        def add_scalar(self, tag, value, step):
            written.append((tag, step))

        def close(self):
            written.append(("close", None))

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=FakeWriter))
    fit(ResNetCifar((1, 1, 1), 4, num_classes=2), _tiny_batches(), epochs=2, lr=0.1, log_dir=tmp_path / "tb", progress=False)
    assert written[0] == ("open", str(tmp_path / "tb")) and written[-1] == ("close", None)
    assert {(t, s) for t, s in written[1:-1]} == {(t, s) for t in ("train_loss", "train_acc", "lr") for s in (1, 2)}


def test_fit_without_the_tensorboard_extra_says_how_to_install_it(tmp_path, monkeypatch):
    import sys

    from coursekit.models import ResNetCifar
    from coursekit.train import fit

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails, as without the extra
    with pytest.raises(ImportError, match=r"pip install -e \"\.\[tensorboard\]\""):
        fit(ResNetCifar((1, 1, 1), 4, num_classes=2), _tiny_batches(), epochs=1, lr=0.1, log_dir=tmp_path, progress=False)


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
