"""Minitron-style width pruning of a Llama decoder (coursekit.llmwidth): scores from activations, pruned copies that
keep grouped-query attention consistent, the equal-parameter plan, bad input."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from coursekit.llmwidth import attention_heads_per_group, neurons_for_equal_params, prune_width, width_importance
from coursekit.metrics import count_params


def tiny(seed=0, layers=3):
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=64, hidden_size=48, intermediate_size=40, num_hidden_layers=layers,
                      num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=128)
    return LlamaForCausalLM(cfg).eval()


def windows(n=3, length=20):
    return [torch.randint(0, 64, (1, length), generator=torch.Generator().manual_seed(i)) for i in range(n)]


def test_importance_is_the_l2_over_sequences_of_each_sequences_mean_activation():
    model, wins = tiny(), windows()
    imp = width_importance(model, wins)
    assert [s.shape for s in imp["neurons"]] == [(40,)] * 3 and [s.shape for s in imp["heads"]] == [(6,)] * 3
    seen = []
    mlp = model.model.layers[1].mlp
    handle = mlp.down_proj.register_forward_pre_hook(lambda _m, a: seen.append(a[0].abs().mean(dim=1)))
    with torch.no_grad():
        for x in wins:
            model(input_ids=x)
    handle.remove()
    by_hand = torch.cat(seen).pow(2).sum(0).sqrt()
    torch.testing.assert_close(imp["neurons"][1], by_hand)


def test_pruning_silent_neurons_and_heads_leaves_the_output_and_the_cache_intact():
    """Neurons whose down_proj column is zero and one query head per group whose o_proj columns are zero add
    nothing: removing exactly them leaves the logits unchanged, with grouped-query attention still mapping each
    kept query head to its own key-value head."""
    model = tiny(seed=1)
    kv, group, hd = attention_heads_per_group(model)
    assert (kv, group, hd) == (2, 3, 8)
    silent_heads = [1, 5]  # one head in each group of three
    with torch.no_grad():
        for layer in model.model.layers:
            layer.mlp.down_proj.weight[:, :10] = 0
            for h in silent_heads:
                layer.self_attn.o_proj.weight[:, h * hd:(h + 1) * hd] = 0
    imp = width_importance(model, windows())
    for s in imp["neurons"]:  # make the silent ones the least important, whatever their activations
        s[:10] = -1.0
    for s in imp["heads"]:
        s[silent_heads] = -1.0
    small = prune_width(model, imp, neurons=30, heads_per_group=2)
    assert small.config.num_attention_heads == 4 and small.config.intermediate_size == 30
    assert small.model.layers[0].self_attn.q_proj.weight.shape == (4 * hd, 48)
    assert count_params(model) - count_params(small) == 3 * (10 * 3 * 48 + 2 * hd * 48 * 2)
    x = windows(1, 24)[0]
    with torch.no_grad():
        torch.testing.assert_close(small(input_ids=x).logits, model(input_ids=x).logits, atol=1e-5, rtol=1e-5)
        cached = small.generate(x, max_new_tokens=6, do_sample=False, use_cache=True, pad_token_id=0)
        assert torch.equal(cached, model.generate(x, max_new_tokens=6, do_sample=False, use_cache=True, pad_token_id=0))
    assert model.config.num_attention_heads == 6, "the original is untouched"


def test_equal_parameter_plan_and_bad_input():
    model = tiny()
    kv, group, hd = attention_heads_per_group(model)
    per_layer = sum(p.numel() for p in model.model.layers[0].parameters())
    keep = neurons_for_equal_params(model, per_layer, heads_per_group=2)  # as many parameters as one layer
    small = prune_width(model, width_importance(model, windows(1)), neurons=keep, heads_per_group=2)
    removed = count_params(model) - count_params(small)
    assert abs(removed - per_layer) <= 3 * 48 * 3 / 2  # within half a neuron of every layer
    imp = width_importance(model, windows(1))
    with pytest.raises(ValueError, match="neurons: 0 is not allowed; use an integer from 1 to 40"):
        prune_width(model, imp, neurons=0, heads_per_group=2)
    with pytest.raises(ValueError, match="heads_per_group: 4 is not allowed; use an integer from 1 to 3"):
        prune_width(model, imp, neurons=10, heads_per_group=4)
    with pytest.raises(ValueError, match="width_importance: windows is empty"):
        width_importance(model, [])
    with pytest.raises(ValueError, match="params_to_remove"):
        neurons_for_equal_params(model, 10 ** 9, heads_per_group=2)


def test_the_llm_plan_exercise_check_cuts_both_axes_and_judges_size_and_perplexity(capsys):
    from coursekit.textchecks import check_llm_plan

    model = tiny(layers=4)
    imp = width_importance(model, windows())
    x = windows(1, 24)[0]

    def perplexity_of(m):
        with torch.no_grad():
            return float(torch.exp(m(input_ids=x, labels=x).loss))

    ref = perplexity_of(model)
    got = check_llm_plan(model, ([1], 30, 2), importance=imp, perplexity_of=perplexity_of, reference_perplexity=ref,
                         max_params_ratio=0.75, max_ppl_ratio=100.0)
    per_layer = sum(p.numel() for p in model.model.layers[0].parameters())
    kept_layer = per_layer - 10 * 3 * 48 - 2 * 8 * 48 * 2
    assert got["params_ratio"] == pytest.approx(3 * kept_layer / (4 * per_layer))
    assert "1 layers removed, 30 neurons and 2 heads per group kept" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="keeps 100.0% of the decoder-layer parameters"):
        check_llm_plan(model, ([], 40, 3), importance=imp, perplexity_of=perplexity_of, reference_perplexity=ref,
                       max_params_ratio=0.75, max_ppl_ratio=100.0)
    with pytest.raises(AssertionError, match="with no healing; at most 0.50x allowed"):
        check_llm_plan(model, ([1], 30, 2), importance=imp, perplexity_of=perplexity_of, reference_perplexity=ref,
                       max_params_ratio=0.75, max_ppl_ratio=0.5)
    check_llm_plan(model, ([1], 30, 2), importance=imp, perplexity_of=perplexity_of, reference_perplexity=ref,
                   max_params_ratio=0.75, max_ppl_ratio=0.5, judge="size")  # the size alone is judged
    with pytest.raises(ValueError, match="plan: list is not allowed"):
        check_llm_plan(model, [1, 30, 2], importance=imp, perplexity_of=perplexity_of, reference_perplexity=ref,
                       max_params_ratio=0.75, max_ppl_ratio=2.0)
