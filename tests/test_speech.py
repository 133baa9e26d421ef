"""Chapter 13's helpers: the folds of an honest speech evaluation, few-shot speaker adaptation, the DS-CNN's
activation arena and its deployment (int8 through PyTorch and ONNX Runtime), and the exercise checks."""

import copy

import pytest
import torch
from torch import nn

from coursekit import checks
from coursekit.audio import FsddData, LogMelSettings, speech_fold
from coursekit.kws import DSCNN, activation_arena_bytes
from coursekit.speechwork import adaptable_parameters, train_on_clips


def _fake_fsdd(takes=20, speakers=("ann", "bob", "cy")) -> FsddData:
    """Random features with the FSDD layout: every speaker says every digit ``takes`` times."""
    rows = [(d, s, t) for d in range(10) for s in range(len(speakers)) for t in range(takes)]
    g = torch.Generator().manual_seed(0)
    return FsddData(torch.randn(len(rows), 8, 12, generator=g), torch.tensor([r[0] for r in rows]),
                    torch.tensor([r[1] for r in rows]), torch.tensor([r[2] for r in rows]), list(speakers),
                    LogMelSettings(n_mels=8))


def test_folds_carve_validation_from_training_takes_and_never_hear_the_held_out_speaker():
    data = _fake_fsdd()
    official = speech_fold(data)
    assert official.unseen is None and official.name == "official"
    assert set(data.take[official.test].tolist()) == set(range(5))
    assert set(data.take[official.val].tolist()) == set(range(5, 10))
    assert set(data.take[official.train].tolist()) == set(range(10, 20))
    assert len(official.train) + len(official.val) + len(official.test) == len(data.digits)
    fold = speech_fold(data, "bob")
    bob = data.speakers.index("bob")
    for split in (fold.train, fold.val, fold.test):
        assert not (data.speaker[split] == bob).any(), "the held-out speaker leaked into a heard split"
    assert (data.speaker[fold.unseen] == bob).all() and len(fold.unseen) == 10 * 20
    assert fold.mean == pytest.approx(float(data.features[fold.train].mean()), abs=1e-6)
    with pytest.raises(ValueError, match="held_out: 'dan' is not allowed"):
        speech_fold(data, "dan")
    with pytest.raises(ValueError, match="leave no take for training"):
        speech_fold(data, test_takes=5, val_takes=15)


def test_each_adaptation_method_trains_only_its_parameters():
    torch.manual_seed(0)
    model = DSCNN(8, 2).eval()
    x, y = torch.randn(10, 1, 16, 20), torch.arange(10)
    for method in ("all", "head", "bn"):
        new = copy.deepcopy(model)
        chosen = {id(p) for p in adaptable_parameters(new, method)}
        stats = {n: b.clone() for n, b in new.named_buffers() if "running_mean" in n}
        train_on_clips(new, x, y, adaptable_parameters(new, method), steps=3, lr=1e-2, seed=0,
                       frozen_statistics=method == "head")
        changed = {id(p) for p, q in zip(new.parameters(), model.parameters(), strict=True) if not torch.equal(p, q)}
        assert changed and changed <= chosen, method
        moved = any(not torch.equal(b, stats[n]) for n, b in new.named_buffers() if n in stats)
        assert moved == (method != "head"), f"{method}: BatchNorm statistics {'moved' if moved else 'stayed'}"
        assert not new.training and all(p.requires_grad for p in new.parameters())
    assert len(adaptable_parameters(model, "head")) == 2  # the classifier's weight and bias
    with pytest.raises(ValueError, match="method: 'lora' is not allowed; use all, head, bn"):
        adaptable_parameters(model, "lora")


def test_the_arena_is_the_largest_layer_input_plus_output():
    model = DSCNN(4, 1, stride=(1, 1))  # stem (10, 4) kernel, padding (5, 1): (1, 10, 12) -> (4, 11, 11)
    out = model.stem[0](torch.zeros(1, 1, 10, 12)).shape
    conv = 1 * 10 * 12 + out.numel()
    later = 2 * out.numel()  # BN, ReLU and the block's layers: output as large as the input
    assert activation_arena_bytes(model, (1, 10, 12)) == max(conv, later)
    assert activation_arena_bytes(model, (1, 10, 12), 4) == 4 * max(conv, later)
    assert model.training, "the model's mode is left as it was"
    checks.check_arena_bytes(activation_arena_bytes)
    with pytest.raises(AssertionError, match="expected"):
        checks.check_arena_bytes(lambda m, size, per: max(p.numel() for p in m.parameters()) * per)


def test_the_design_check_judges_what_the_profile_says(capsys):
    good = {"int8_weight_bytes": 1400, "val_accuracy": 0.93}
    checks.check_speech_design(good, budget_bytes=1500, min_val_accuracy=0.9, judge="all")
    with pytest.raises(AssertionError, match="over the budget of 1,500"):
        checks.check_speech_design({**good, "int8_weight_bytes": 1600}, budget_bytes=1500, min_val_accuracy=0.9,
                                   judge="all")
    with pytest.raises(AssertionError, match="below the target 90.00%"):
        checks.check_speech_design({**good, "val_accuracy": 0.85}, budget_bytes=1500, min_val_accuracy=0.9, judge="all")
    checks.check_speech_design({**good, "val_accuracy": 0.85}, budget_bytes=1500, min_val_accuracy=0.9, judge="size")
    checks.check_speech_design({"int8_weight_bytes": 9999, "val_accuracy": 0.1}, budget_bytes=1500,
                               min_val_accuracy=0.9, judge="none")
    assert "reported, not judged" in capsys.readouterr().out
    checks.check_arena_answer("B")
    with pytest.raises(AssertionError, match="does not shrink"):
        checks.check_arena_answer("c")


def test_the_dscnn_deploys_through_pytorch_int8_and_onnx_runtime(tmp_path):
    from coursekit.convquant import int8_fx_model
    from coursekit.metrics import file_bytes
    from coursekit.onnxexport import OnnxModel, export_onnx, onnx_weight_bytes, quantize_onnx_static

    torch.manual_seed(0)
    model = DSCNN(16, 2).eval()
    x = torch.randn(6, 1, 40, 51)
    with torch.no_grad():
        ref = model(x)
        assert torch.equal(model(x[:, 0]), ref), "(batch, mels, frames) gets its channel"
    path = export_onnx(model, (x[:2],), tmp_path / "kws.onnx")
    assert torch.allclose(OnnxModel(path, 1)(x), ref, atol=1e-4)
    int8 = quantize_onnx_static(path, tmp_path / "kws-int8.onnx", [x])
    assert (OnnxModel(int8, 1)(x).argmax(1) == ref.argmax(1)).float().mean() >= 0.5
    fp32_bytes, int8_bytes = onnx_weight_bytes(path), onnx_weight_bytes(int8)
    n = sum(p.numel() for p in model.parameters())
    assert 3 * n <= fp32_bytes <= 4 * n and int8_bytes < fp32_bytes / 2
    sizes = file_bytes(int8)
    assert sizes["raw"] == int8.stat().st_size and 0 < sizes["gzip"] < sizes["raw"]
    assert file_bytes(int8, fast=True)["raw"] == sizes["raw"]
    q = int8_fx_model(model, [(x, None)], max_batches=1, example=x[:1])
    assert q(x).shape == (6, 10) and any("quantized" in type(m).__module__ for m in q.modules())
    assert isinstance(model.stem[0], nn.Conv2d), "the float model is left as it was"
