"""GPTQ from scratch (coursekit.gptq, coursekit.llm.gptq_decoder) against the paper's own formulas: the blocked,
Cholesky-based algorithm equals Optimal Brain Surgeon's column-by-column update with explicit inverses; with
uncorrelated inputs it is round-to-nearest; with correlated ones it lowers the layer's output error; a decoder is
quantized layer by layer; bad input is refused before any work."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from coursekit.gptq import gptq_linears, gptq_quantize, inverse_hessian_rows, output_error
from coursekit.llm import gptq_decoder
from coursekit.quantize import dequantize, quantize
from coursekit.weightquant import QuantizedLinear, quantize_linears


def correlated_inputs(n=512, d=32, seed=0):
    """(n, d) inputs whose features are correlated (a random mixing of a few sources) with uneven scales."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 8, generator=g) @ torch.randn(8, d, generator=g) + 0.1 * torch.randn(n, d, generator=g)


def obs_reference(w, gram, *, bits, group_size, damp=0.01):
    """The paper's update written out (its equations 2-3), column by column, with the explicit inverse Hessian of the
    columns not yet rounded, eliminated one column at a time: no Cholesky, no blocks. Asymmetric, float64."""
    w = w.double().clone()
    h = gram.double().clone()
    h += damp * torch.diagonal(h).mean() * torch.eye(h.shape[0], dtype=h.dtype)
    hinv = torch.linalg.inv(h)
    codes = torch.zeros_like(w)
    for q in range(w.shape[1]):
        if q % group_size == 0:
            grid = quantize(w[:, q:q + group_size].float(), bits, symmetric=False)
            s, z = grid.scale.reshape(-1).double(), grid.zero.reshape(-1).double()
        codes[:, q] = torch.clamp(torch.round(w[:, q] / s) + z, 0, 2 ** bits - 1)
        e = (w[:, q] - s * (codes[:, q] - z)) / hinv[q, q]
        w[:, q:] -= e[:, None] * hinv[q, q:][None, :]
        hinv = hinv - hinv[:, q:q + 1] @ hinv[q:q + 1, :] / hinv[q, q]
    return codes


def test_blocked_cholesky_gptq_equals_the_column_by_column_obs_update():
    torch.manual_seed(0)
    w = torch.randn(12, 32)
    x = correlated_inputs()
    gram = x.t() @ x
    ref = obs_reference(w, gram, bits=3, group_size=8)
    for block in (8, 16, 128):  # lazy batches of 1, 2 and 4 groups give the same codes
        qt = gptq_quantize(w, gram, bits=3, group_size=8, block_size=block)
        assert torch.equal(qt.q.double(), ref), block


@pytest.mark.parametrize("group_size", [None, 8])
def test_with_uncorrelated_inputs_gptq_is_round_to_nearest(group_size):
    torch.manual_seed(1)
    w = torch.randn(6, 32)
    qt = gptq_quantize(w, torch.eye(32), bits=4, group_size=group_size)
    rtn = quantize(w, 4, symmetric=False, granularity="group" if group_size else "channel", group_size=group_size)
    assert torch.equal(qt.q, rtn.q)
    assert torch.allclose(dequantize(qt), dequantize(rtn))


@pytest.mark.parametrize("bits, symmetric", [(3, False), (4, True), (8, True)])
def test_on_correlated_inputs_gptq_lowers_the_output_error_of_round_to_nearest(bits, symmetric):
    torch.manual_seed(2)
    w = torch.randn(16, 32)
    x = correlated_inputs(seed=3)
    gram = x.t() @ x
    qt = gptq_quantize(w, gram, bits=bits, group_size=16, symmetric=symmetric)
    rtn = quantize(w, bits, symmetric=symmetric, granularity="group", group_size=16)
    assert qt.q.dtype == rtn.q.dtype
    assert output_error(w, dequantize(qt), gram) < 0.7 * output_error(w, dequantize(rtn), gram)


def test_a_column_whose_input_is_always_zero_gets_weight_zero():
    w = torch.randn(4, 8)
    x = correlated_inputs(d=8)
    x[:, 3] = 0
    w_hat = dequantize(gptq_quantize(w, x.t() @ x, bits=4, group_size=4))
    assert torch.isfinite(w_hat).all()
    assert torch.equal(w_hat[:, 3], torch.zeros(4))  # no error reaches it, and 0 is exact with an integer zero point
    assert w_hat[:, [0, 1, 2]].abs().sum() > 0


def test_gptq_linears_replaces_each_linear_with_stored_codes_that_reload(tmp_path):
    torch.manual_seed(4)
    net = torch.nn.Sequential(torch.nn.Linear(32, 16), torch.nn.ReLU(), torch.nn.Linear(16, 8))
    x = correlated_inputs(n=256)
    ref = net(x)
    info = gptq_linears(net, lambda: net(x), bits=4, group_size=16, skip=())
    assert isinstance(net[0], QuantizedLinear) and isinstance(net[2], QuantizedLinear)
    assert info["layers"] == 2 and info["weights"] == 32 * 16 + 16 * 8 and info["tokens"] == 256
    assert info["stored_bytes"] == net[0].stored_bytes + net[2].stored_bytes < info["float_bytes"] / 4
    assert (net(x) - ref).abs().mean() < 0.1 * ref.abs().mean()
    torch.save(net.state_dict(), tmp_path / "q.pt")
    again = torch.nn.Sequential(torch.nn.Linear(32, 16), torch.nn.ReLU(), torch.nn.Linear(16, 8))
    gptq_linears(again, lambda: again(x), bits=4, group_size=16, skip=())
    again.load_state_dict(torch.load(tmp_path / "q.pt", weights_only=True))
    assert torch.equal(again(x), net(x))


@pytest.mark.parametrize("kwargs, match", [
    (dict(bits=5, group_size=16), "bits"),
    (dict(bits=4, group_size=12), "group_size: 12 does not divide"),
    (dict(bits=4, group_size=16, block_size=0), "block_size"),
    (dict(bits=4, group_size=16, damp=0), "damp"),
])
def test_bad_arguments_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        gptq_quantize(torch.randn(4, 32), torch.eye(32), **kwargs)


def test_a_gram_of_the_wrong_shape_and_an_empty_calibration_feed_are_refused_before_any_layer_changes():
    with pytest.raises(ValueError, match="gram: shape"):
        gptq_quantize(torch.randn(4, 32), torch.eye(16), bits=4)
    net = torch.nn.Sequential(torch.nn.Linear(32, 16))
    with pytest.raises(ValueError, match="zero batches"):
        gptq_linears(net, lambda: None, bits=4, skip=())
    assert isinstance(net[0], torch.nn.Linear)
    two = torch.nn.ModuleDict({"a": torch.nn.Linear(32, 16), "b": torch.nn.Linear(32, 16)})
    with pytest.raises(ValueError, match="never ran b"):
        gptq_linears(two, lambda: two["a"](torch.randn(2, 32)), bits=4, skip=())
    assert isinstance(two["a"], torch.nn.Linear)
    with pytest.raises(ValueError, match="no nn.Linear"):
        gptq_linears(torch.nn.ReLU(), lambda: None, bits=4)
    with pytest.raises(ValueError, match="group_size: 12"):
        gptq_linears(net, lambda: net(torch.randn(2, 32)), bits=4, group_size=12, skip=())
    assert isinstance(net[0], torch.nn.Linear)


def tiny_llama(seed=0):
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    return LlamaForCausalLM(cfg).eval()


def test_gptq_decoder_quantizes_every_decoder_linear_in_order_and_beats_round_to_nearest():
    ids = torch.randint(0, 64, (256,), generator=torch.Generator().manual_seed(5))
    float_model = tiny_llama()
    with torch.no_grad():
        ref = float_model(ids[None]).logits
    gptq, rtn = tiny_llama(), tiny_llama()
    info = gptq_decoder(gptq, ids, bits=3, group_size=16, seq_len=64)
    quantize_linears(rtn, bits=3, granularity="group", group_size=16, symmetric=False)
    assert info["layers"] == 3 * 7 and info["stored_bytes"] < info["float_bytes"] / 4
    kinds = {type(m).__name__ for n, m in gptq.named_modules() if "proj" in n}
    assert kinds == {"QuantizedLinear"} and type(gptq.lm_head) is torch.nn.Linear
    with torch.no_grad():
        err_gptq = (gptq(ids[None]).logits - ref).pow(2).mean()
        err_rtn = (rtn(ids[None]).logits - ref).pow(2).mean()
    assert err_gptq < err_rtn


def test_layers_reading_one_input_are_quantized_together_with_the_codes_each_gets_alone():
    torch.manual_seed(6)
    a, b = torch.nn.Linear(32, 8), torch.nn.Linear(32, 24)
    net = torch.nn.ModuleDict({"a": a, "b": b})
    x = correlated_inputs(n=128)
    gram = x.t() @ x
    alone = {n: gptq_quantize(m.weight, gram, bits=3, group_size=8) for n, m in net.items()}
    gptq_linears(net, lambda: (net["a"](x), net["b"](x)), bits=3, group_size=8, skip=())
    for n in ("a", "b"):
        assert torch.equal(net[n].weight_codes().to(torch.uint8), alone[n].q)
        assert torch.allclose(net[n].scale.float(), alone[n].scale.reshape(net[n].scale.shape).half().float())


def test_the_inverse_hessian_factor_is_the_reference_codes_three_step_cholesky():
    x = correlated_inputs(d=24)
    gram = x.t() @ x
    u, dead = inverse_hessian_rows(gram)
    h = gram.double() + 0.01 * torch.diagonal(gram.double()).mean() * torch.eye(24, dtype=torch.float64)
    ref = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    assert not dead.any() and torch.allclose(u.double(), ref, rtol=1e-4, atol=1e-7)
    assert torch.allclose(u.double().t() @ u.double(), torch.linalg.inv(h), rtol=1e-4, atol=1e-7)
