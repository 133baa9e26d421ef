"""Chapter 10's language-model tools on a tiny randomly initialised Llama (same architecture as SmolLM2, milliseconds):
perplexity by hand, windows, layer removal that keeps generate() working, Wanda and N:M masks, healing, latency."""

import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from coursekit import checks
from coursekit.layerscores import layer_similarity
from coursekit.llm import (
    decoder_layers,
    fine_tune_lm,
    heal_with_kd,
    linear_macs_per_token,
    lm_latency,
    lm_windows,
    logit_kd_loss,
    perplexity,
    remove_decoder_layers,
    validate_layer_indices,
)
from coursekit.sparsity import (
    apply_sparsity,
    apply_sparsity_layerwise,
    input_norms,
    nm_mask,
    parse_pattern,
    prunable_linears,
    sparsity_mask,
    unstructured_mask,
    validate_sparsity_args,
    wanda_scores,
)


@pytest.fixture
def tiny_llama():
    def make(layers=4, seed=0):
        torch.manual_seed(seed)
        cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
        return LlamaForCausalLM(cfg).eval()
    return make


def stream(n=200, seed=1):
    return torch.randint(0, 64, (n,), generator=torch.Generator().manual_seed(seed))


def test_windows_score_every_token_but_each_windows_first_once():
    ids = torch.arange(100)
    wins = lm_windows(ids, 32)
    assert sum(n for _, n in wins) == 100 - 4  # 4 windows (32, 32, 32, 4 tokens), each window's first unscored
    assert [w.shape[1] for w, _ in wins] == [32, 32, 32, 4]
    sliding = lm_windows(ids, 32, 16)
    assert sum(n for _, n in sliding) == 99  # with overlap every token after the first is scored exactly once
    with pytest.raises(ValueError, match="stride"):
        lm_windows(ids, 32, 40)


def test_perplexity_is_exp_of_the_mean_token_loss_by_hand(tiny_llama):
    model, ids = tiny_llama(), stream(130)
    got = perplexity(model, ids, window=64, amp="off")
    total, n = 0.0, 0
    with torch.no_grad():
        for b in range(0, 130, 64):
            x = ids[b:b + 64].unsqueeze(0)
            if x.shape[1] < 2:
                continue
            logits = model(input_ids=x).logits[0, :-1]
            total += float(torch.nn.functional.cross_entropy(logits, x[0, 1:], reduction="sum"))
            n += x.shape[1] - 1
    assert got["tokens"] == n == 127
    assert got["perplexity"] == pytest.approx(math.exp(total / n), rel=1e-5)
    assert got["window_tokens"] == [63, 63, 1] and sum(got["window_nll"]) == pytest.approx(total, rel=1e-5)


def test_removed_layers_renumber_the_cache_and_generate_still_runs(tiny_llama):
    model = tiny_llama(layers=5)
    trimmed = remove_decoder_layers(model, [1, 3])
    assert len(decoder_layers(model)) == 5  # the original is untouched
    assert trimmed.config.num_hidden_layers == 3
    assert [lay.self_attn.layer_idx for lay in decoder_layers(trimmed)] == [0, 1, 2]
    x = stream(6).unsqueeze(0)
    with torch.inference_mode():
        cached = trimmed.generate(x, max_new_tokens=8, do_sample=False, use_cache=True, pad_token_id=0)
        plain = trimmed.generate(x, max_new_tokens=8, do_sample=False, use_cache=False, pad_token_id=0)
    assert cached.shape == (1, 14) and torch.equal(cached, plain)
    with pytest.raises(ValueError, match=r"layers: \[0, 1, 2, 3, 4\] is not allowed; use at most 4 of the 5 layers"):
        remove_decoder_layers(model, range(5))
    with pytest.raises(ValueError, match="0 to 4"):
        validate_layer_indices([7], 5)


def test_the_smoke_stand_in_keeps_the_first_layers_and_equals_removing_the_rest(tiny_llama):
    """pretrained.keep_first_layers (the smoke profile's SmolLM2 stand-in) cuts in place to the same model that
    remove_decoder_layers makes from the last layers, and refuses a depth the model does not have."""
    from coursekit.pretrained import keep_first_layers

    model = tiny_llama(layers=5)
    x = stream(12).unsqueeze(0)
    with torch.inference_mode():
        expected = remove_decoder_layers(model, [3, 4])(input_ids=x).logits
        kept = keep_first_layers(model, 3)
        assert kept is model and kept.config.num_hidden_layers == 3 and len(decoder_layers(kept)) == 3
        torch.testing.assert_close(kept(input_ids=x).logits, expected)
        cached = kept.generate(x, max_new_tokens=4, do_sample=False, use_cache=True, pad_token_id=0)
        assert torch.equal(cached, kept.generate(x, max_new_tokens=4, do_sample=False, use_cache=False, pad_token_id=0))
    assert keep_first_layers(model, 3) is model  # all of them: unchanged
    for bad in (0, 4, 2.0, True):
        with pytest.raises(ValueError, match=rf"llm_num_layers: {bad!r} is not allowed; use an integer from 1 to 3"):
            keep_first_layers(model, bad)


def test_a_layer_with_zero_residual_branches_is_removed_without_changing_the_output(tiny_llama):
    """Llama is pre-norm: with o_proj and down_proj zero, layer 2 adds nothing to the residual stream."""
    model = tiny_llama(layers=4)
    with torch.no_grad():
        layer = decoder_layers(model)[2]
        layer.self_attn.o_proj.weight.zero_()
        layer.mlp.down_proj.weight.zero_()
    x = stream(20).unsqueeze(0)
    with torch.inference_mode():
        torch.testing.assert_close(remove_decoder_layers(model, [2])(input_ids=x).logits, model(input_ids=x).logits)


def test_layer_scores_run_on_a_decoder_and_see_every_token(tiny_llama):
    model = tiny_llama()
    wins = [stream(40, s).unsqueeze(0) for s in range(2)]
    with torch.inference_mode():
        sim = layer_similarity(decoder_layers(model), lambda x: model(input_ids=x) and None, wins)
    assert sim["tokens"] == 80 and len(sim["angular"]) == 4
    assert all(0 <= a <= 1 for a in sim["angular"]) and all(0 <= b <= 2 for b in sim["block_influence"])


def test_nm_mask_keeps_exactly_n_of_every_m_and_the_largest():
    scores = torch.randn(6, 16, generator=torch.Generator().manual_seed(0))
    mask = nm_mask(scores, 2, 4)
    groups = mask.reshape(6, 4, 4)
    assert (groups.sum(-1) == 2).all()
    s = scores.reshape(6, 4, 4)
    assert (torch.where(groups, s, torch.inf).amin(-1) >= torch.where(~groups, s, -torch.inf).amax(-1)).all()
    with pytest.raises(ValueError, match="groups of 4"):
        nm_mask(torch.randn(2, 6), 2, 4)


def test_wanda_with_equal_input_norms_is_magnitude_and_masks_per_row():
    w = torch.randn(8, 12, generator=torch.Generator().manual_seed(1))
    norms = torch.full((12,), 3.0)
    assert torch.equal(unstructured_mask(wanda_scores(w, norms), 0.5), unstructured_mask(wanda_scores(w, None), 0.5))
    assert (unstructured_mask(wanda_scores(w, None), 0.5).sum(1) == 6).all()
    loud = torch.ones(12)
    loud[0] = 1000.0  # a loud input feature keeps its weights however small
    assert unstructured_mask(wanda_scores(w, loud), 0.75)[:, 0].all()


def test_input_norms_and_apply_sparsity(tiny_llama):
    model = tiny_llama(layers=2)
    ids = stream(64)
    norms = input_norms(model, ids, seq_len=32)
    assert set(norms) == set(prunable_linears(model)) and len(norms) == 2 * 7
    q = decoder_layers(model)[0].self_attn.q_proj
    captured = []
    hook = q.register_forward_pre_hook(lambda m, a: captured.append(a[0].reshape(-1, a[0].shape[-1])))
    with torch.no_grad():
        for b in (0, 32):
            model(input_ids=ids[b:b + 32].unsqueeze(0))
    hook.remove()
    torch.testing.assert_close(norms["model.layers.0.self_attn.q_proj"], torch.cat(captured).norm(dim=0))
    for method, pattern, want in (("magnitude", "unstructured", 0.5), ("wanda", "2:4", 0.5), ("wanda", "unstructured", 0.3)):
        m = tiny_llama(layers=2)
        info = apply_sparsity(m, method=method, sparsity=want, pattern=pattern, norms=norms)
        assert info["sparsity"] == pytest.approx(want, abs=0.02)
        assert not any(name.endswith("_orig") for name, _ in m.named_parameters())  # masks made permanent
        zeros = sum(int((lin.weight == 0).sum()) for lin in prunable_linears(m).values())
        assert zeros == info["zeros"]
        assert (m.lm_head.weight != 0).all()  # the head stays dense


def test_bad_sparsity_arguments_are_refused():
    with pytest.raises(ValueError, match="sparsity"):
        validate_sparsity_args(1.0, "unstructured", "wanda")
    with pytest.raises(ValueError, match="sparsity"):
        validate_sparsity_args(-0.1, "unstructured", "wanda")
    with pytest.raises(ValueError, match="pattern"):
        validate_sparsity_args(0.5, "4:2", "wanda")
    with pytest.raises(ValueError, match="pattern"):
        parse_pattern("blocks")
    with pytest.raises(ValueError, match="method"):
        validate_sparsity_args(0.5, "unstructured", "sparsegpt")
    assert parse_pattern("2:4") == (2, 4) and parse_pattern("unstructured") is None


def test_logit_kd_is_zero_for_equal_logits_and_healing_moves_towards_the_teacher(tiny_llama):
    t = torch.randn(2, 5, 64)
    assert float(logit_kd_loss(t, t)) == pytest.approx(0.0, abs=1e-6)
    teacher, student = tiny_llama(seed=0), remove_decoder_layers(tiny_llama(seed=0), [1, 2])
    ids = stream(400)
    info = heal_with_kd(student, teacher, ids, steps=25, batch_size=4, seq_len=32, lr=3e-3, amp="off")
    assert info["tokens"] == 25 * 4 * 32
    assert sum(info["losses"][-5:]) < sum(info["losses"][:5])
    assert all(p.requires_grad for p in student.parameters())


def test_plain_fine_tuning_is_next_token_cross_entropy_on_the_same_windows(tiny_llama):
    """fine_tune_lm (the healing control): its first loss is transformers' own next-token loss on the first batch
    of windows heal_with_kd would draw with the same seed; training lowers it; only ``params`` are trained."""
    model = tiny_llama(seed=3)
    ids = stream(400)
    begins = torch.randint(0, len(ids) - 32, (4,), generator=torch.Generator().manual_seed(5))
    x = torch.stack([ids[b:b + 32] for b in begins.tolist()])
    with torch.no_grad():
        expected = float(model(input_ids=x, labels=x).loss)
    head = [p for n, p in model.named_parameters() if "embed_tokens" not in n]
    frozen = model.model.embed_tokens.weight.detach().clone()
    info = fine_tune_lm(model, ids, steps=25, batch_size=4, seq_len=32, lr=3e-3, amp="off", seed=5, params=head)
    assert info["losses"][0] == pytest.approx(expected, rel=1e-5)
    assert sum(info["losses"][-5:]) < sum(info["losses"][:5]) and info["tokens"] == 25 * 4 * 32
    assert torch.equal(model.model.embed_tokens.weight, frozen) and not model.training
    with pytest.raises(ValueError, match="fine_tune_lm: steps"):
        fine_tune_lm(model, ids, steps=0, batch_size=4, seq_len=32, lr=1e-3)


def test_lm_latency_and_macs(tiny_llama):
    big, small = tiny_llama(layers=4), remove_decoder_layers(tiny_llama(layers=4), [0, 1])
    lat = lm_latency({"big": big, "small": small}, prompt_len=16, new_tokens=4, rounds=1, vocab_low=1, vocab_high=60)
    assert set(lat["big"]) >= {"prefill_ms", "decode_ms_per_token", "prompt_len"} and lat["big"]["prompt_len"] == 16
    assert lat["big"]["precision"] == "float32"
    bf16 = lm_latency({"big": big}, prompt_len=16, new_tokens=4, rounds=1, vocab_low=1, vocab_high=60, amp="bf16")
    assert bf16["big"]["precision"] == "bfloat16 autocast" and bf16["big"]["decode_ms_per_token"] > 0
    per_layer = 32 * 32 * 2 + 32 * 16 * 2 + 3 * 32 * 64
    assert linear_macs_per_token(big) - linear_macs_per_token(small) == 2 * per_layer


def test_exercise_checkers():
    assert checks.check_perplexity_from_losses(lambda l: float(torch.exp(torch.as_tensor(l).mean())))
    with pytest.raises(AssertionError):
        checks.check_perplexity_from_losses(lambda l: float(torch.exp(torch.as_tensor(l)).mean()))
    assert checks.check_wanda_score(lambda w, x: w.abs() * x.norm(dim=0))
    with pytest.raises(AssertionError):
        checks.check_wanda_score(lambda w, x: w.abs())

    def mask(s):
        g = s.reshape(s.shape[0], -1, 4)
        return torch.zeros_like(g, dtype=torch.bool).scatter_(-1, g.topk(2, dim=-1).indices, True).reshape(s.shape)

    assert checks.check_mask_2_4(mask)
    with pytest.raises(AssertionError):
        checks.check_mask_2_4(lambda s: s > 0)


def test_tied_embeddings_are_counted_once(tiny_llama):
    from coursekit.metrics import count_nonzero_params, count_params

    cfg = tiny_llama().config
    cfg.tie_word_embeddings = True
    model = LlamaForCausalLM(cfg)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert count_nonzero_params(model) <= count_params(model)


def test_a_user_written_sparsity_method_runs_through_apply_sparsity(tiny_llama):
    """A function with SPARSITY_METHODS' signature goes where "magnitude" or "wanda" goes; one that imitates
    magnitude prunes the same weights."""
    from coursekit.sparsity import SPARSITY_METHODS

    assert set(SPARSITY_METHODS) == {"magnitude", "wanda"}
    a, b = tiny_llama(layers=2), tiny_llama(layers=2)
    apply_sparsity(a, method="magnitude", sparsity=0.5)
    info = apply_sparsity(b, method=lambda w, norms: w.detach().abs() * 3.0, sparsity=0.5)
    assert info["sparsity"] == pytest.approx(0.5, abs=0.02)
    for (na, la), (_, lb) in zip(prunable_linears(a).items(), prunable_linears(b).items(), strict=True):
        assert torch.equal(la.weight == 0, lb.weight == 0), na
    with pytest.raises(ValueError, match="one score per weight"):
        apply_sparsity(tiny_llama(layers=2), method=lambda w, norms: w.sum(0), sparsity=0.5)


def test_record_lm_writes_perplexity_shared_latency_and_macs_per_token(tmp_path, tiny_llama):
    """Session.record_lm (10): a record per language model, its latency the one measured on the model it names in
    latency_of, its MACs per token of the linear layers, perplexity set and accuracy null."""
    from coursekit.ledger import read_ledger
    from coursekit.session import start_session

    S = start_session("10_llm_compression", profile="smoke", run_dir=str(tmp_path / "run"), dataset="wikitext2",
                      print_report=False)
    full, cut = tiny_llama(layers=4), remove_decoder_layers(tiny_llama(layers=4), [1, 2])
    latency = {"full": {"prompt_len": 16, "prefill_ms": 2.5, "decode_ms_per_token": 0.75},
               "cut": {"prompt_len": 16, "prefill_ms": 1.5, "decode_ms_per_token": 0.5}}
    out = S.text.record_lm([{"model": full, "stage": "baseline", "name": "full", "perplexity": 40.0, "latency_of": "full"},
                       {"model": cut, "stage": "trim", "name": "cut", "perplexity": 55.5, "latency_of": "cut",
                        "extra": {"layers_removed": [1, 2]}},
                       {"model": cut, "stage": "trim", "name": "cut_again", "perplexity": 55.5, "latency_of": "cut"}],
                      "wikitext2", latency)
    records = {r["model"]: r for r in read_ledger(tmp_path / "run")}
    assert set(records) == set(out) == {"full", "cut", "cut_again"}
    assert records["cut"]["latency_ms"] == {"cpu_prefill_s16": 1.5, "cpu_decode_tok": 0.5}
    assert records["cut_again"]["extra"]["latency_measured_on"] == "cut"
    assert records["cut"]["perplexity"] == 55.5 and records["cut"]["accuracy"] is None
    assert records["cut"]["task"] == "wikitext2" and records["cut"]["extra"]["layers_removed"] == [1, 2]
    assert records["full"]["macs"] == linear_macs_per_token(full) > records["cut"]["macs"] == linear_macs_per_token(cut)


@pytest.mark.parametrize("pattern", ["unstructured", "2:4"])
def test_layerwise_wanda_takes_each_layers_norms_through_the_layers_already_pruned(tiny_llama, pattern):
    """Wanda's reference order, checked against a slow reference: for each layer, ``input_norms`` of the whole (partly
    pruned) model for that layer's linears, then that layer pruned. The first layer sees the dense model, so it is
    pruned exactly as the one-pass version prunes it; later layers differ from the one-pass version."""
    ids = stream(200)
    fast, slow, one_pass = tiny_llama(), tiny_llama(), tiny_llama()
    info = apply_sparsity_layerwise(fast, ids, sparsity=0.5, pattern=pattern, seq_len=64)
    for i, _ in enumerate(decoder_layers(slow)):
        names = [n for n in prunable_linears(slow) if n.startswith(f"model.layers.{i}.")]
        norms = input_norms(slow, ids, seq_len=64, names=names)
        for n in names:
            lin = slow.get_submodule(n)
            lin.weight.data *= sparsity_mask(lin.weight, norms[n], 0.5, pattern)
    apply_sparsity(one_pass, method="wanda", sparsity=0.5, pattern=pattern, norms=input_norms(one_pass, ids, seq_len=64))
    assert info["sparsity"] == pytest.approx(0.5, abs=0.01)
    masks = {n: lin.weight != 0 for n, lin in prunable_linears(fast).items()}
    assert all(torch.equal(masks[n], lin.weight != 0) for n, lin in prunable_linears(slow).items()), "the paper's order"
    first = [n for n in masks if n.startswith("model.layers.0.")]
    assert all(torch.equal(masks[n], one_pass.get_submodule(n).weight != 0) for n in first), "layer 0 sees the dense model"
    assert not all(torch.equal(masks[n], lin.weight != 0) for n, lin in prunable_linears(one_pass).items()), \
        "later layers see the pruned layers' outputs"
