"""Quantization against references: error bounds, integer-only arithmetic, k-means, AWQ's invariance, packing,
stored sizes, save and reload, and the refusals (coursekit.quantize, coursekit.codebook, coursekit.weightquant)."""

import subprocess
import sys

import pytest
import torch
from torch import nn

from coursekit.codebook import CodebookQuantizer, kmeans_codebook
from coursekit.metrics import count_params
from coursekit.quantize import (
    dequantize,
    fake_quantize,
    fake_quantize_ste,
    integer_linear,
    pack_int4,
    quantization_error,
    quantize,
    unpack_int4,
)
from coursekit.weightquant import (
    QuantizedLinear,
    awq_clip_search,
    awq_search,
    clip_groups,
    keep_channels_float,
    linear_inputs_stats,
    quantize_linears,
)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("granularity,group", [("tensor", None), ("channel", None), ("group", 16)])
def test_round_to_nearest_error_is_at_most_half_a_step(bits, symmetric, granularity, group):
    torch.manual_seed(0)
    w = torch.randn(8, 64) * torch.rand(8, 1) * 3
    qt = quantize(w, bits, symmetric=symmetric, granularity=granularity, group_size=group)
    err = (dequantize(qt) - w).abs()
    step = qt.scale.expand(qt.scale.shape[0], *qt.scale.shape[1:-1], 1)
    bound = (step / 2 + 1e-6).expand(*err.reshape(*step.shape[:-1], -1).shape).reshape(w.shape) \
        if granularity != "tensor" else step.reshape(()) / 2 + 1e-6
    assert (err <= bound).all()
    lo, hi = (-(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1) if symmetric else (0, 2 ** bits - 1)
    assert int(qt.q.min()) >= lo and int(qt.q.max()) <= hi


def test_finer_granularity_and_more_bits_lower_the_error_on_rows_of_different_scale():
    torch.manual_seed(0)
    w = torch.randn(16, 128) * torch.logspace(-2, 0, 16)[:, None]
    assert quantization_error(w, 8, granularity="channel") < quantization_error(w, 8, granularity="tensor")
    assert quantization_error(w, 4, granularity="group", group_size=32) < quantization_error(w, 4, granularity="channel")
    errs = [quantization_error(w, b, granularity="channel") for b in (2, 3, 4, 8)]
    assert errs == sorted(errs, reverse=True)


def test_symmetric_keeps_zero_exact_and_asymmetric_fits_a_one_sided_range():
    x = torch.rand(1000) * 5  # all positive, like activations after ReLU
    assert quantization_error(x, 4, symmetric=False, granularity="tensor") < \
        quantization_error(x, 4, symmetric=True, granularity="tensor")
    z = torch.tensor([[0.0, 1.0, -3.0, 2.5]])
    assert fake_quantize(z, 8)[0, 0] == 0


def test_straight_through_estimator_passes_the_gradient_unchanged():
    w = torch.randn(4, 8, requires_grad=True)
    out = fake_quantize_ste(w, 4)
    assert torch.equal(out.detach(), fake_quantize(w.detach(), 4))
    out.sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))


def test_integer_linear_equals_the_float_product_of_the_dequantized_tensors():
    torch.manual_seed(0)
    x, w, b = torch.randn(5, 32).relu(), torch.randn(6, 32), torch.randn(6)
    xq = quantize(x, 8, symmetric=False, granularity="tensor")
    wq = quantize(w, 8, symmetric=True, granularity="channel")
    y = integer_linear(xq.q, float(xq.scale), int(xq.zero), wq.q, wq.scale.reshape(-1), b)
    ref = dequantize(xq) @ dequantize(wq).t()
    bias_step = float(xq.scale) * wq.scale.reshape(-1)
    assert torch.allclose(y, ref + b, atol=float(bias_step.max()) / 2 + 1e-5)
    assert torch.allclose(y - (ref + b), torch.zeros_like(y), atol=1e-3)
    assert (y - x @ w.t() - b).abs().max() < 0.2  # and close to the float layer itself


def test_packing_round_trips_and_refuses_what_does_not_fit():
    codes = torch.randint(0, 16, (64,), dtype=torch.uint8)
    packed = pack_int4(codes)
    assert packed.numel() == 32 and torch.equal(unpack_int4(packed), codes)
    with pytest.raises(ValueError, match="even number"):
        pack_int4(codes[:3])
    with pytest.raises(ValueError, match="0..15"):
        pack_int4(torch.tensor([16, 0], dtype=torch.uint8))


def test_kmeans_centroids_are_the_cluster_means_and_the_weights_take_them():
    torch.manual_seed(0)
    w = torch.cat([torch.randn(300) * 0.1 - 1, torch.randn(300) * 0.1 + 1, torch.randn(300) * 0.1 + 3])
    centroids, labels = kmeans_codebook(w, 2)
    for k in range(4):
        members = w[labels == k]
        if len(members):
            assert torch.isclose(centroids[k], members.mean(), atol=1e-5)
    assert set(torch.round(centroids).tolist()) >= {-1.0, 1.0, 3.0}


def test_codebook_quantizer_keeps_the_model_on_its_codebook_after_a_step():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8 * 6 * 6, 4))
    cq = CodebookQuantizer(model, bits=2).apply()
    for layer in cq.layers.values():
        assert len(torch.unique(layer.weight)) <= 4
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    opt.step()
    cq.update()
    for name, layer in cq.layers.items():
        centroids, labels = cq.codebooks[name]
        assert torch.equal(layer.weight.detach(), centroids[labels])
    n = sum(m.weight.numel() for m in cq.layers.values())
    assert cq.stored_bytes() == sum((m.weight.numel() * 2 + 7) // 8 for m in cq.layers.values()) + 2 * 4 * 4
    assert cq.stored_bytes() < 4 * n / 10


class TinyLM(nn.Module):
    """Two linears and a tied-style head, called like a causal LM (input_ids=...)."""

    def __init__(self, vocab=50, d=64):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.up = nn.Linear(d, 128)
        self.down = nn.Linear(128, d, bias=False)
        self.lm_head = nn.Linear(d, vocab, bias=False)

    def forward(self, input_ids, use_cache=False):
        h = self.embed(input_ids)
        return self.lm_head(h + self.down(torch.relu(self.up(h))))


@pytest.mark.parametrize("bits,granularity,group,symmetric", [(8, "channel", None, True), (8, "channel", None, False),
                                                             (4, "group", 32, False), (3, "group", 16, True)])
def test_quantized_linear_stores_packed_codes_and_computes_with_the_dequantized_weight(bits, granularity, group,
                                                                                         symmetric):
    torch.manual_seed(0)
    lin = nn.Linear(64, 48)
    q = QuantizedLinear.from_linear(lin, bits=bits, symmetric=symmetric, granularity=granularity, group_size=group)
    ref = fake_quantize(lin.weight.detach(), bits, symmetric=symmetric, granularity=granularity, group_size=group)
    assert torch.allclose(q.dequantized_weight(), ref, rtol=2e-3, atol=1e-4)  # float16 scales as stored
    x = torch.randn(3, 64)
    assert torch.allclose(q(x), x @ q.dequantized_weight().t() + lin.bias, atol=1e-5)
    assert q.codes.numel() * q.codes.element_size() == 64 * 48 * (1 if bits == 8 else 0.5)


def test_quantize_linears_counts_params_and_bytes_and_reloads_in_a_fresh_process(tmp_path):
    torch.manual_seed(0)
    model = TinyLM()
    n_before = count_params(model)
    x = torch.randint(0, 50, (1, 12))
    info = quantize_linears(model, bits=4, granularity="group", group_size=32, symmetric=False)
    assert info["layers"] == 2 and info["weights"] == 64 * 128 * 2
    assert info["stored_bytes"] == info["weights"] // 2 + 2 * 2 * (64 * 128 // 32 + 128 * 64 // 32)
    assert count_params(model) == n_before, "quantized weights are still counted as parameters"
    out = model(x)
    torch.save(model.state_dict(), tmp_path / "q.pt")
    torch.save(x, tmp_path / "x.pt")
    torch.save(out, tmp_path / "out.pt")
    script = f"""
import sys, torch
sys.path.insert(0, {str(__import__('pathlib').Path(__file__).parent)!r})
from test_quantize import TinyLM
from coursekit.weightquant import quantize_linears
m = TinyLM()
quantize_linears(m, bits=4, granularity="group", group_size=32, symmetric=False)
m.load_state_dict(torch.load({str(tmp_path / 'q.pt')!r}, weights_only=True))
x = torch.load({str(tmp_path / 'x.pt')!r}, weights_only=True)
assert torch.equal(m(x), torch.load({str(tmp_path / 'out.pt')!r}, weights_only=True))
print("same outputs")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "same outputs" in done.stdout, done.stderr[-2000:]


def test_awq_scaling_leaves_the_float_output_unchanged_and_never_loses_to_rtn_on_its_objective():
    torch.manual_seed(0)
    model = TinyLM()
    windows = [torch.randint(0, 50, (1, 32)) for _ in range(4)]
    with torch.no_grad():
        model.embed.weight[:, :2] *= 20  # two input channels carry large activations
    stats = linear_inputs_stats(model, windows)
    assert set(stats) == {"up", "down"} and stats["up"]["tokens"] == 128
    only = linear_inputs_stats(model, windows, within="do")
    assert set(only) == {"down"} and torch.equal(only["down"]["gram"], stats["down"]["gram"])
    with pytest.raises(ValueError, match="within: no linear layer"):
        linear_inputs_stats(model, windows, within="nothing.")
    lin, s = model.up, torch.rand(64) + 0.5
    x = torch.randn(5, 64)
    assert torch.allclose((x / s) @ (lin.weight * s).t(), x @ lin.weight.t(), atol=1e-5), "W s . x / s = W x"
    res = awq_search(model, stats, bits=3, group_size=16)
    for rtn, awq in res["error"].values():
        assert awq <= rtn + 1e-9
    assert res["error"]["up"][1] < 0.9 * res["error"]["up"][0], "the scaled channels are protected"
    before = model(windows[0])
    quantize_linears(model, bits=8, granularity="channel", input_scales=res["scales"])
    assert torch.allclose(model(windows[0]), before, atol=0.05 * float(before.abs().max()))


def test_clip_groups_clamps_each_group_to_its_own_range():
    w = torch.tensor([[-4.0, 1.0, 0.5, 3.0], [2.0, -2.0, 9.0, -0.1]])
    m = torch.tensor([[2.0, 1.0], [3.0, 0.05]])
    assert torch.equal(clip_groups(w, m, 2), torch.tensor([[-2.0, 1.0, 0.5, 1.0], [2.0, -2.0, 0.05, -0.05]]))
    assert torch.equal(clip_groups(w, torch.tensor([[3.0], [1.0]]), None),
                       torch.tensor([[-3.0, 1.0, 0.5, 3.0], [1.0, -1.0, 1.0, -0.1]]))


def test_awq_clipping_search_never_loses_to_the_full_range_and_ratio_one_changes_nothing():
    torch.manual_seed(0)
    model = TinyLM()
    with torch.no_grad():
        model.up.weight[:, 5] *= 30  # an outlier column: clipping it frees the grid for the rest of its groups
    stats = linear_inputs_stats(model, [torch.randint(0, 50, (1, 32)) for _ in range(4)])
    res = awq_clip_search(model, stats, bits=3, group_size=16, no_clip=("down",))
    assert set(res["clip_max"]) == {"up"}, "layers named in no_clip are left out"
    full = model.up.weight.detach().reshape(128, 4, 16).abs().amax(-1)
    m = res["clip_max"]["up"]
    assert m.shape == (128, 4) and bool((m <= full + 1e-6).all()) and bool((m >= 0.55 * full - 1e-6).all())
    before, after = res["error"]["up"]
    assert after < before, "the outlier column's groups are clipped"
    same = awq_clip_search(model, stats, bits=3, group_size=16, ratios=(1.0,))
    assert torch.allclose(same["clip_max"]["up"], full)
    plain, clipped = TinyLM(), TinyLM()
    plain.load_state_dict(model.state_dict())
    clipped.load_state_dict(model.state_dict())
    quantize_linears(plain, bits=3, granularity="group", group_size=16, symmetric=False)
    quantize_linears(clipped, bits=3, granularity="group", group_size=16, symmetric=False, clip_max=same["clip_max"])
    assert torch.equal(plain.up.codes, clipped.up.codes)
    with pytest.raises(ValueError, match="ratios must be a non-empty set of numbers in \\(0, 1\\]"):
        awq_clip_search(model, stats, bits=3, group_size=16, ratios=(1.2,))


def test_keeping_salient_channels_float_keeps_exactly_those_columns():
    torch.manual_seed(0)
    model = TinyLM()
    w0 = model.up.weight.detach().clone()
    stats = linear_inputs_stats(model, [torch.randint(0, 50, (1, 16))])
    kept = keep_channels_float(model, stats, bits=3, group_size=16, fraction=0.05)
    idx = kept["up"]
    assert len(idx) == round(0.05 * 64)
    assert torch.equal(model.up.weight[:, idx], w0[:, idx])
    assert not torch.equal(model.up.weight, w0)


@pytest.mark.parametrize("kwargs,match", [
    ({"bits": 5}, "bits: 5 is not allowed"),
    ({"bits": 4, "granularity": "row"}, "granularity: 'row' is not allowed"),
    ({"bits": 4, "granularity": "group"}, "group_size: None is not allowed"),
    ({"bits": 4, "granularity": "group", "group_size": 128}, "does not divide the 64 input features"),
    ({"bits": 4, "granularity": "channel", "group_size": 32}, "group_size: 32 is not allowed"),
])
def test_bad_quantization_arguments_are_refused_before_any_layer_changes(kwargs, match):
    model = TinyLM()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=match):
        quantize_linears(model, **kwargs)
    assert all(isinstance(m, nn.Linear) for m in (model.up, model.down))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_kmeans_refuses_unsupported_bits():
    with pytest.raises(ValueError, match="bits: 1 is not allowed"):
        kmeans_codebook(torch.randn(10), 1)


def test_the_int8_kernel_layer_computes_what_the_stored_int8_layer_computes():
    from coursekit.weightquant import Int8KernelLinear, use_int8_kernel

    torch.manual_seed(0)
    model = TinyLM()
    quantize_linears(model, bits=8, granularity="channel")
    x = torch.randint(0, 50, (1, 12))
    before = model(x)
    n = count_params(model)
    assert use_int8_kernel(model) == 2 and isinstance(model.up, Int8KernelLinear)
    assert count_params(model) == n
    after = model(x)
    assert torch.allclose(after, before, atol=0.02 * float(before.abs().max()))  # bfloat16 activations


def test_static_int8_counts_and_reloads_the_weights_pytorch_keeps_packed():
    """PyTorch's int8 modules keep weights outside parameters(): count_params and count_nonzero_params still see
    them (known answers: the conv's weight and its folded bias, the linear's weight and bias)."""
    from coursekit.convquant import calibrate_input_ranges, fold_batchnorms, int8_fx_model, simulate_static_int8
    from coursekit.metrics import count_nonzero_params, state_dict_bytes

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
                          nn.Linear(8 * 6 * 6, 4)).eval()
    batches = [(torch.randn(16, 3, 8, 8), None) for _ in range(3)]
    q = int8_fx_model(model, batches, max_batches=2, example=batches[0][0][:1])
    expected = 8 * 3 * 3 * 3 + 8 + 8 * 6 * 6 * 4 + 4
    assert count_params(q) == expected
    assert 0.9 * expected <= count_nonzero_params(q) <= expected
    assert state_dict_bytes(q)["raw"] < state_dict_bytes(model)["raw"]  # a tiny model: the container dominates
    x = torch.randn(4, 3, 8, 8)
    folded, n = fold_batchnorms(model)
    assert n == 1 and torch.allclose(folded(x), model(x), atol=1e-5)
    sim = simulate_static_int8(folded, calibrate_input_ranges(folded, batches))
    assert (sim(x) - model(x)).abs().max() < 0.1 * model(x).abs().max()
    assert (q(x) - model(x)).abs().max() < 0.1 * model(x).abs().max()
    with pytest.raises(ValueError, match="0 batches"):
        calibrate_input_ranges(folded, [])
    with pytest.raises(ValueError, match="at least one batch"):
        int8_fx_model(model, batches, max_batches=0, example=x[:1])


def test_weight_fake_quant_trains_through_the_rounding_and_bakes_in():
    from coursekit.convquant import add_weight_fake_quant, remove_weight_fake_quant

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 4))
    add_weight_fake_quant(model, 2)
    w = model[0].weight
    assert len(torch.unique(w[0])) <= 3  # 2-bit symmetric: -1, 0, 1 times the row's scale
    model(torch.randn(5, 8)).sum().backward()
    assert model[0].parametrizations.weight.original.grad is not None
    remove_weight_fake_quant(model)
    assert isinstance(model[0].weight, nn.Parameter) and len(torch.unique(model[0].weight[0])) <= 3


def test_nearest_centroid_by_binary_search_equals_the_distance_table_argmin():
    from coursekit.codebook import _nearest  # noqa: PLC2701 (the private helper is what is tested)

    torch.manual_seed(0)
    centroids = torch.tensor([0.5, -1.0, 2.0, 0.5, 1.25])  # unsorted, with a duplicate: ties go to the lower index
    w = torch.cat([torch.randn(10_000) * 2, centroids, torch.tensor([-0.25, 0.875, 1.625, -5.0, 9.0])])
    expected = (w[:, None] - centroids[None]).abs().argmin(1)
    assert torch.equal(_nearest(w, centroids), expected)
