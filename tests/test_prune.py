import pytest
import torch
from torch import nn
from torch.nn.utils import prune as tprune

from coursekit.checkpoints import load_checkpoint, outputs_match_in_fresh_process, save_checkpoint
from coursekit.data import Batches
from coursekit.metrics import count_macs, count_nonzero_params
from coursekit.models import ResNetCifar, resnet18_cifar
from coursekit.prune import (
    AGPSchedule,
    agp_sparsity,
    bn_scale_importance,
    channel_groups,
    channels_to_keep,
    global_threshold,
    l1_filter_importance,
    magnitude_mask,
    make_permanent,
    prunable_layers,
    prune_by_magnitude,
    prune_channels,
    prune_conv_bn,
    prune_in_channels,
    random_importance,
    ratios_from_sensitivity,
    sensitivity_scan,
    sparsity_report,
    update_masks,
)
from coursekit.train import fit

MODELS = {
    "resnet111_w8_pool": lambda: ResNetCifar((1, 1, 1), 8, stem_pool=True),
    "resnet222_w16": lambda: ResNetCifar((2, 2, 2), 16),
    "resnet321_w12": lambda: ResNetCifar((3, 2, 1), 12, num_classes=4),
    "tv_resnet18": lambda: resnet18_cifar(num_classes=10),
}


# ----------------------------------------------------------------------------- unstructured

@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.8, 0.95])
def test_magnitude_mask_equals_torch_prune_l1_unstructured(sparsity):
    conv = nn.Conv2d(8, 16, 3)
    mask = magnitude_mask(conv.weight, sparsity)
    tprune.l1_unstructured(conv, "weight", amount=sparsity)
    assert torch.equal(mask, conv.weight_mask)
    assert int((mask == 0).sum()) == round(sparsity * conv.weight.numel())


def test_global_threshold_matches_global_unstructured():
    torch.manual_seed(0)
    a, b = nn.Conv2d(4, 8, 3), nn.Linear(50, 20)
    t = global_threshold([a.weight, b.weight], 0.6)
    tprune.global_unstructured([(a, "weight"), (b, "weight")], tprune.L1Unstructured, amount=0.6)
    for m in (a, b):
        assert torch.equal(m.weight_mask, (m.weight_orig.abs() > t).float())


def test_prunable_layers_keeps_the_stem_and_classifier_dense():
    m = ResNetCifar((1, 1, 1), 8)
    names = prunable_layers(m)
    assert "stem.0" not in names and "fc" not in names and "layer1.0.conv1" in names and "layer2.0.shortcut.0" in names


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_prune_by_magnitude_reaches_the_sparsity_and_keeps_first_and_last_dense(scope):
    m = ResNetCifar((1, 1, 1), 8)
    prune_by_magnitude(m, 0.7, scope=scope)
    rows = {r["layer"]: r for r in sparsity_report(m, layers=list(prunable_layers(m)))}
    assert rows["total"]["sparsity"] == pytest.approx(0.7, abs=1e-3)
    if scope == "layer":
        assert all(abs(r["sparsity"] - 0.7) < 0.02 for r in rows.values())
    full = {r["layer"]: r for r in sparsity_report(m)}
    assert full["stem.0"]["zeros"] == 0 and full["fc"]["zeros"] == 0


def test_make_permanent_keeps_the_zeros_and_removes_masks_and_hooks(cifar_images):
    m = ResNetCifar((1, 1, 1), 8).eval()
    prune_by_magnitude(m, 0.5)
    x = cifar_images()
    before, nonzero = m(x), count_nonzero_params(m)
    make_permanent(m)
    assert not any(k.endswith("_mask") or k.endswith("_orig") for k in m.state_dict())
    assert torch.allclose(m(x), before) and count_nonzero_params(m) == nonzero


def test_save_checkpoint_refuses_live_masks(tmp_path):
    m = ResNetCifar((1, 1, 1), 8)
    prune_by_magnitude(m, 0.5)
    with pytest.raises(ValueError, match="make_permanent"):
        save_checkpoint(tmp_path / "m.pt", m, {"name": "resnet_cifar", "blocks": [1, 1, 1], "width": 8})


def test_agp_schedule_is_cubic_and_monotone():
    assert agp_sparsity(0, 0.8, 0, 100) == 0.0
    assert agp_sparsity(100, 0.8, 0, 100) == pytest.approx(0.8)
    assert agp_sparsity(50, 0.8, 0, 100) == pytest.approx(0.8 * (1 - 0.5**3))
    values = [agp_sparsity(t, 0.9, 10, 60) for t in range(0, 80)]
    assert all(b >= a for a, b in zip(values[:-1], values[1:], strict=True)) and values[5] == 0.0 and values[-1] == pytest.approx(0.9)


def test_agp_inside_fit_reaches_the_final_sparsity_and_pruned_weights_stay_zero():
    torch.manual_seed(0)
    m = ResNetCifar((1, 1, 1), 8, num_classes=3)
    x = torch.randint(0, 255, (48, 3, 16, 16), dtype=torch.uint8)
    y = torch.randint(0, 3, (48,))
    batches = Batches(x, y, torch.full((3,), 0.5), torch.full((3,), 0.25), 16, shuffle=True, augment=True, drop_last=True, seed=0)
    agp = AGPSchedule(0.75, end=0.6, every=2)
    prune_by_magnitude(m, 0.0)
    seen_zero = {}

    def on_step(step, total, model):
        agp(step, total, model)
        for n, mod in prunable_layers(model).items():  # once pruned, a weight never comes back
            z = mod.weight_mask == 0
            if n in seen_zero:
                assert bool(z[seen_zero[n]].all())
            seen_zero[n] = z.clone()

    fit(m, batches, epochs=4, lr=0.05, progress=False, device="cpu", on_step=on_step)
    total = sparsity_report(m, layers=list(prunable_layers(m)))[-1]
    assert total["sparsity"] == pytest.approx(0.75, abs=0.01)
    assert [s for _, s in agp.history] == sorted(s for _, s in agp.history)


def test_update_masks_global_counts_exactly():
    m = ResNetCifar((1, 1, 1), 8)
    update_masks(m, 0.6, scope="global")
    assert sparsity_report(m, layers=list(prunable_layers(m)))[-1]["sparsity"] == pytest.approx(0.6, abs=1e-4)


def test_sensitivity_scan_leaves_the_model_alone():
    m = ResNetCifar((1, 1, 1), 8).eval()
    state = {k: v.clone() for k, v in m.state_dict().items()}
    layers = list(prunable_layers(m))[:2]
    scan = sensitivity_scan(m, layers, [0.0, 0.9], lambda c, n, a: tprune.l1_unstructured(c.get_submodule(n), "weight", a),
                            lambda c: count_nonzero_params(c))
    assert set(scan) == set(layers) and all(s[0] > s[1] for s in scan.values())
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in state.items())


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, "0.5", True])
def test_bad_sparsity_is_refused(bad):
    with pytest.raises(ValueError, match="sparsity"):
        prune_by_magnitude(ResNetCifar((1, 1, 1), 8), bad)


def test_unknown_layer_names_are_refused():
    with pytest.raises(ValueError, match=r"no layer\(s\) \['layer9.conv'\]"):
        prune_by_magnitude(ResNetCifar((1, 1, 1), 8), 0.5, layers=["layer9.conv"])


# ----------------------------------------------------------------------------- structured

@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("scope", ["inner", "stream", "all"])
def test_ratio_zero_returns_identical_outputs(name, scope, randomize_bn, cifar_images):
    m = randomize_bn(MODELS[name]())
    p = prune_channels(m, 0.0, scope=scope)
    x = cifar_images()
    assert torch.equal(p(x), m(x))


@pytest.mark.parametrize("name", list(MODELS))
def test_pruning_exactly_the_zeroed_channels_keeps_the_outputs(name, randomize_bn, cifar_images):
    """Zero some channels' producers (conv filters, BN gamma and beta): they carry 0 everywhere, so
    removing them, inner and residual-stream channels alike, changes no output."""
    torch.manual_seed(0)
    m = randomize_bn(MODELS[name]())
    groups = channel_groups(m, "all")
    plan = {}
    with torch.no_grad():
        for gname, g in groups.items():
            n_zero = g.channels // 4
            idx = torch.randperm(g.channels)[:n_zero]
            for conv, bn in g.producers:
                conv.weight[idx] = 0
                bn.weight[idx] = 0
                bn.bias[idx] = 0
            plan[gname] = n_zero / g.channels
    x = cifar_images()
    before = m(x)
    p = prune_channels(m, plan, round_to=1)
    assert torch.allclose(p(x), before, atol=1e-5)
    assert sum(q.numel() for q in p.parameters()) < sum(q.numel() for q in m.parameters())
    assert not any("mask" in k for k in p.state_dict())


@pytest.mark.parametrize("name", [n for n in MODELS if n != "resnet111_w8_pool"])
def test_uniform_pruning_shrinks_macs_and_keeps_multiples_of_8(name, cifar_images):
    m = MODELS[name]()
    p = prune_channels(m, 0.5, scope="all")
    assert count_macs(p) < 0.5 * count_macs(m)
    convs = [c for n, c in p.named_modules() if isinstance(c, nn.Conv2d) and n not in ("stem.0", "conv1")]
    assert all(c.out_channels % 8 == 0 for c in convs)
    assert p(cifar_images()).shape == m(cifar_images()).shape


def test_eight_channels_stay_eight_when_rounding_to_8():
    m = ResNetCifar((1, 1, 1), 8, stem_pool=True)
    p = prune_channels(m, 0.5, scope="inner")
    assert p.layer1[0].conv1.out_channels == 8 and p.layer2[0].conv1.out_channels == 8 and p.layer3[0].conv1.out_channels == 16


def test_prune_channels_does_not_change_the_input_model(randomize_bn):
    m = randomize_bn(ResNetCifar((1, 1, 1), 16))
    state = {k: v.clone() for k, v in m.state_dict().items()}
    prune_channels(m, 0.5, scope="all")
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in state.items())


def test_importance_picks_the_channels_that_go():
    conv, bn = nn.Conv2d(2, 4, 1, bias=False), nn.BatchNorm2d(4)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, -3.0, 0.5, 2.0]).view(4, 1, 1, 1).expand(4, 2, 1, 1))
        bn.weight.copy_(torch.tensor([0.1, -0.2, 3.0, 1.0]))
    assert torch.equal(l1_filter_importance(conv, bn), torch.tensor([2.0, 6.0, 1.0, 4.0]))
    assert torch.equal(bn_scale_importance(conv, bn), torch.tensor([0.1, 0.2, 3.0, 1.0]))
    r = random_importance(3)
    assert torch.equal(r(conv, bn), r(conv, bn)) and r(conv, bn).shape == (4,)


@pytest.mark.parametrize("importance", [l1_filter_importance, bn_scale_importance, random_importance(1)])
def test_every_importance_function_plugs_into_prune_channels(importance, randomize_bn, cifar_images):
    m = randomize_bn(ResNetCifar((1, 1, 1), 16))
    assert prune_channels(m, 0.5, importance=importance)(cifar_images()).shape == (3, 10)


def test_prune_conv_bn_and_inputs_by_hand(randomize_bn):
    torch.manual_seed(0)
    conv, bn, nxt = nn.Conv2d(3, 6, 3, padding=1), randomize_bn(nn.BatchNorm2d(6)), nn.Conv2d(6, 4, 1)
    keep = torch.tensor([0, 2, 5])
    c2, b2 = prune_conv_bn(conv, bn, keep)
    n2 = prune_in_channels(nxt, keep)
    x = torch.randn(2, 3, 8, 8)
    full = bn(conv(x))
    assert torch.allclose(b2(c2(x)), full[:, keep], atol=1e-6)
    masked = full.clone()
    masked[:, [1, 3, 4]] = 0
    assert torch.allclose(n2(b2(c2(x))), nxt(masked), atol=1e-5)


def test_channels_to_keep_rounds_to_multiples_of_8():
    assert channels_to_keep(24, 0.33) == 16
    assert channels_to_keep(24, 0.0) == 24
    assert channels_to_keep(96, 0.5) == 48
    assert channels_to_keep(8, 0.7) == 8  # never below one multiple
    assert channels_to_keep(10, 0.6, round_to=1) == 4


@pytest.mark.parametrize("ratio,match", [(1.0, r"in \[0, 1\)"), (-0.2, r"in \[0, 1\)"), (0.99, "none")])
def test_bad_ratios_are_refused_before_any_change(ratio, match):
    m = ResNetCifar((1, 1, 1), 16)
    with pytest.raises(ValueError, match=match):
        prune_channels(m, {"layer1.0": ratio}, round_to=1)


def test_unknown_plan_names_are_refused():
    with pytest.raises(ValueError, match=r"no channel group\(s\) \['layer4.0'\]"):
        prune_channels(ResNetCifar((1, 1, 1), 16), {"layer4.0": 0.5})


def test_ratios_from_sensitivity():
    scan = {"a": [0.80, 0.79, 0.70], "b": [0.80, 0.80, 0.795]}
    assert ratios_from_sensitivity(scan, [0.25, 0.5, 0.75], baseline=0.80, max_drop=0.01) == {"a": 0.5, "b": 0.75}


@pytest.mark.parametrize("name", ["resnet222_w16", "tv_resnet18"])
def test_pruned_checkpoint_loads_in_a_fresh_process_with_identical_outputs(name, tmp_path, randomize_bn, cifar_images):
    m = randomize_bn(MODELS[name]())
    spec = {"name": "resnet_cifar", **m.config} if name != "tv_resnet18" else {"name": "resnet18_cifar", **m.config}
    p = prune_channels(m, 0.5, scope="all")
    save_checkpoint(tmp_path / "p.pt", p, spec)
    assert outputs_match_in_fresh_process(tmp_path / "p.pt", p, cifar_images())
    with torch.no_grad():
        p.fc.bias.add_(1.0)  # a different model must not match
    assert not outputs_match_in_fresh_process(tmp_path / "p.pt", p, cifar_images())
    same, _ = load_checkpoint(tmp_path / "p.pt")
    assert [t.shape for t in same.state_dict().values()] == [t.shape for t in p.state_dict().values()]


def test_sparse_format_is_smaller_only_when_sparse():
    from coursekit.metrics import state_dict_bytes
    from coursekit.prune import sparse_state_dict_bytes

    m = ResNetCifar((1, 1, 1), 16)
    dense = state_dict_bytes(m)["raw"]
    assert sparse_state_dict_bytes(m) == pytest.approx(dense, rel=0.05)  # nothing to pack
    make_permanent(prune_by_magnitude(m, 0.9))
    assert sparse_state_dict_bytes(m) < 0.4 * dense


def test_masked_models_can_be_copied_after_pruning_and_training(cifar_images):
    """torch.nn.utils.prune recomputes ``weight`` in every training forward, leaving a non-leaf tensor with a gradient
    history that deepcopy refuses; detach_masked_weights makes the copy possible, and the copy computes the same."""
    import copy

    from coursekit.prune import detach_masked_weights

    m = prune_by_magnitude(ResNetCifar((1, 1, 1), 8), 0.5)
    copy.deepcopy(m)  # freshly pruned: weight is still a plain tensor
    m.train()
    x = cifar_images()
    m(x).sum().backward()  # a training forward leaves weight with a gradient history
    with pytest.raises(RuntimeError, match="deepcopy"):
        copy.deepcopy(m)
    twin = copy.deepcopy(detach_masked_weights(m))
    m.eval()
    twin.eval()
    with torch.no_grad():
        assert torch.equal(twin(x), m(x))
    from coursekit.metrics import count_nonzero_params, count_params

    assert count_nonzero_params(twin) == count_nonzero_params(m) < 0.6 * count_params(m), "the zeros are kept"


def test_macs_if_zeros_skipped_counts_positions_times_nonzero_weights():
    from coursekit.metrics import count_macs
    from coursekit.models import model_from_spec
    from coursekit.prune import macs_if_zeros_skipped, make_permanent, prune_by_magnitude

    model = model_from_spec({"name": "resnet_cifar", "blocks": [1, 1, 1], "width": 8}).eval()
    assert macs_if_zeros_skipped(model) == count_macs(model)  # dense: every MAC counts
    with torch.no_grad():
        model.stem[0].weight[:, :, 0, 0] = 0  # zeros in the first conv: 32x32 output positions each
        model.fc.weight[:, :3] = 0
    zeros_stem = int((model.stem[0].weight == 0).sum())
    assert count_macs(model) - macs_if_zeros_skipped(model) == zeros_stem * 32 * 32 + 3 * model.fc.out_features
    pruned = make_permanent(prune_by_magnitude(model, 0.8, scope="global"))
    assert macs_if_zeros_skipped(pruned) < count_macs(pruned)
