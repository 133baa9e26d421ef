"""Chapter 09's structured pruning of a BERT encoder, checked against references on a tiny random model:
removed heads / neurons compute what zeroed ones compute, a layer with no residual branch can go, the gradient
head importance equals a finite difference, and a pruned model reloads in a fresh process."""

import copy
import subprocess
import sys

import pytest
import torch

from coursekit import checks
from coursekit.layerscores import block_angular, layer_similarity, layers_by_criterion, validate_layers_removed
from coursekit.metrics import count_params
from coursekit.textmodels import keep_layers, load_text_model, save_text_model
from coursekit.textprune import (
    encoder_layers,
    ffn_importance,
    ffn_to_remove,
    head_importance,
    heads_to_remove,
    layer_shapes,
    prune_ffn,
    prune_heads,
    reshape_layers,
    validate_keep_fraction,
    zero_ffn,
    zero_heads,
)


def test_removed_heads_compute_what_zeroed_heads_compute(tiny_classifier, token_batches):
    model = tiny_classifier(heads=4)
    x, _ = token_batches(1)[0]
    heads = {0: [1, 3], 2: [0]}
    zeroed, removed = zero_heads(copy.deepcopy(model), heads), prune_heads(copy.deepcopy(model), heads)
    assert [s["heads"] for s in layer_shapes(removed)] == [2, 4, 3]
    assert encoder_layers(removed)[0].attention.self.query.weight.shape == (8, 16)
    assert encoder_layers(removed)[0].attention.output.dense.weight.shape == (16, 8)
    assert count_params(removed) == count_params(model) - 3 * (3 * (4 * 16 + 4) + 16 * 4)
    with torch.inference_mode():
        torch.testing.assert_close(removed(x), zeroed(x), atol=1e-6, rtol=0)
        assert not torch.allclose(model(x), zeroed(x), atol=1e-4)  # the heads did contribute


def test_removed_ffn_neurons_compute_what_zeroed_ones_compute(tiny_classifier, token_batches):
    model = tiny_classifier(ffn=32)
    x, _ = token_batches(1)[0]
    neurons = {0: list(range(0, 32, 2)), 1: [5], 2: list(range(31))}
    zeroed, removed = zero_ffn(copy.deepcopy(model), neurons), prune_ffn(copy.deepcopy(model), neurons)
    assert [s["ffn"] for s in layer_shapes(removed)] == [16, 31, 1]
    with torch.inference_mode():
        torch.testing.assert_close(removed(x), zeroed(x), atol=1e-6, rtol=0)


def test_a_layer_without_residual_branches_can_be_removed(tiny_classifier, token_batches):
    """BERT is post-LayerNorm: with both branches zero and unit LayerNorms on it and before it, layer 1 maps a
    normalised input to itself (up to LayerNorm's eps), so removing it leaves the logits unchanged."""
    model = tiny_classifier(layers=3)
    x, _ = token_batches(1)[0]
    with torch.no_grad():
        before, lay = encoder_layers(model)[0], encoder_layers(model)[1]
        for ln in (before.output.LayerNorm, lay.attention.output.LayerNorm, lay.output.LayerNorm):
            ln.weight.fill_(1.0)
            ln.bias.zero_()
        for lin in (lay.attention.output.dense, lay.output.dense):
            lin.weight.zero_()
            lin.bias.zero_()
    with torch.inference_mode():
        torch.testing.assert_close(keep_layers(model, [0, 2])(x), model(x), atol=1e-4, rtol=0)


def test_gradient_head_importance_is_the_finite_difference_of_the_loss(tiny_classifier, token_batches):
    model = tiny_classifier(heads=4).double()
    x, y = token_batches(1, batch=8)[0]
    raw = head_importance(model, [(x, y)], "gradient", normalize=False)
    eps = 1e-6

    def loss(m):
        with torch.no_grad():
            return float(torch.nn.functional.cross_entropy(m(x), y))

    for layer, head in ((0, 1), (2, 3)):
        scaled = copy.deepcopy(model)
        with torch.no_grad():
            encoder_layers(scaled)[layer].attention.output.dense.weight[:, head * 4:(head + 1) * 4] *= 1 - eps
        fd = abs(loss(model) - loss(scaled)) / eps
        assert raw[layer, head].item() == pytest.approx(fd, rel=2e-3, abs=1e-6)
    norm = head_importance(model, [(x, y)], "gradient")
    torch.testing.assert_close(norm.norm(dim=1), torch.ones(3, dtype=norm.dtype))


def test_magnitude_importance_and_global_ranking_keep_one_head_per_layer(tiny_classifier):
    model = tiny_classifier(heads=4)
    with torch.no_grad():
        encoder_layers(model)[1].attention.self.value.weight[4:8] = 0
    mag = head_importance(model, criterion="magnitude")
    assert mag.shape == (3, 4) and mag[1, 1] < mag[1].max()
    scores = torch.tensor([[5.0, 1, 1, 1], [0.1, 0.2, 0.3, 0.4], [9, 8, 7, 6]])
    gone = heads_to_remove(scores, 3)  # keep 3 of 12: one per layer, each layer's best
    assert gone == {0: [1, 2, 3], 1: [0, 1, 2], 2: [1, 2, 3]}
    assert sum(map(len, heads_to_remove(scores, 7).values())) == 5
    with pytest.raises(ValueError, match="keep"):
        heads_to_remove(scores, 2)


def test_ffn_importance_needs_data_for_activations_and_ranks_per_layer(tiny_classifier, token_batches):
    model = tiny_classifier(ffn=32)
    act = ffn_importance(model, token_batches(2), "activation")
    w = ffn_importance(model, criterion="weight")
    assert [len(s) for s in act] == [32] * 3 and all((s >= 0).all() for s in act + w)
    gone = ffn_to_remove(w, 8)
    assert all(len(v) == 24 and set(v).isdisjoint(torch.argsort(w[i])[-8:].tolist()) for i, v in gone.items())
    with pytest.raises(ValueError, match="batches"):
        ffn_importance(model, None, "activation")


def test_bad_input_is_refused_before_any_work(tiny_classifier):
    model = tiny_classifier(heads=4, ffn=32)
    with pytest.raises(ValueError, match="lose all of its 4 heads"):
        prune_heads(model, {0: [0, 1, 2, 3]})
    with pytest.raises(ValueError, match="all of its 32 FFN neurons"):
        prune_ffn(model, {1: list(range(32))})
    with pytest.raises(ValueError, match="layer 7 does not exist"):
        prune_heads(model, {7: [0]})
    with pytest.raises(ValueError, match="criterion"):
        head_importance(model, criterion="random")
    with pytest.raises(ValueError, match="criterion"):
        ffn_importance(model, criterion="taylor")
    with pytest.raises(ValueError, match="head_keep"):
        validate_keep_fraction("head_keep", 0.05, 72, 6, "heads")
    with pytest.raises(ValueError, match="head_keep"):
        validate_keep_fraction("head_keep", 1.5, 72, 6, "heads")
    assert validate_keep_fraction("head_keep", 0.5, 72, 6, "heads") == 36
    with pytest.raises(ValueError, match="layers_removed: 6"):
        validate_layers_removed(6, 6)
    with pytest.raises(ValueError, match="criterion"):
        layers_by_criterion("random", 1, 6, {"angular": [0] * 6})
    assert layer_shapes(model) == [{"heads": 4, "ffn": 32}] * 3  # nothing was changed by the refused calls


def _run_masked(model):
    """run(batch) for ``layer_similarity``: the classifier on the batch's tokens, padding (id 0) masked out."""
    def run(batch):
        model(batch[0])
        return batch[0].ne(0)
    return run


def test_layer_similarity_matches_the_hidden_states_and_ignores_padding(tiny_classifier, token_batches):
    model = tiny_classifier(layers=3)
    batches = token_batches(2)
    with torch.inference_mode():
        sim = layer_similarity(encoder_layers(model), _run_masked(model), batches)
        ref_bi, ref_ang, n = [0.0] * 3, [0.0] * 3, 0
        for x, _ in batches:
            hs = model.encoder(input_ids=x, attention_mask=x.ne(0).long(), output_hidden_states=True).hidden_states
            m = x.ne(0)
            for i in range(3):
                cos = torch.nn.functional.cosine_similarity(hs[i][m], hs[i + 1][m], dim=-1).clamp(-1, 1)
                ref_bi[i] += float((1 - cos).sum())
                ref_ang[i] += float(torch.arccos(cos).sum() / torch.pi)
            n += int(m.sum())
    assert sim["tokens"] == n
    assert sim["block_influence"] == pytest.approx([v / n for v in ref_bi], rel=1e-5)
    assert sim["angular"] == pytest.approx([v / n for v in ref_ang], rel=1e-5)
    x = torch.randn(2, 5, 8)
    assert block_angular(x, 2 * x) == pytest.approx(0.0, abs=1e-3)
    assert block_angular(x, -x) == pytest.approx(1.0, abs=1e-3)


def test_layers_by_criterion():
    scores = {"block_influence": [0.3, 0.1, 0.2, 0.05, 0.4], "angular": [0.3, 0.2, 0.1, 0.15, 0.4],
              "block_angular": {2: [0.5, 0.4, 0.1, 0.3]}}
    assert layers_by_criterion("block_influence", 2, 5, scores) == [1, 3]
    assert layers_by_criterion("angular", 2, 5, scores) == [2, 3]
    assert layers_by_criterion("angular_block", 2, 5, scores) == [2, 3], "the block whose ends are closest"
    assert layers_by_criterion("last", 2, 5) == [3, 4], "the final layer included"
    assert layers_by_criterion("last_before_final", 2, 5) == [2, 3], "the papers' baseline keeps the final layer"
    assert layers_by_criterion("block_influence", 2, 5, {"block_influence": [0.0, 0.1, 0.2, 0.3, 0.4]},
                               keep_first=True) == [1, 2]
    assert layers_by_criterion("angular_block", 2, 5, {"block_angular": {2: [0.0, 0.4, 0.1, 0.3]}},
                               keep_first=True) == [2, 3]
    assert layers_by_criterion("last", 0, 5) == []
    with pytest.raises(ValueError, match="do not fit"):
        layers_by_criterion("last_before_final", 4, 5, keep_first=True)


def test_block_angular_scores_are_gromovs_last_token_distances(tiny_classifier, token_batches):
    """d(l, n) = arccos(cos(x^(l), x^(l+n)))/pi at each sequence's last real token, averaged over sequences: checked
    against the encoder's own hidden states (x^(0) the embeddings, x^(k) layer k's output)."""
    model = tiny_classifier(layers=3)
    batches = token_batches(2)
    with torch.inference_mode():
        sim = layer_similarity(encoder_layers(model), _run_masked(model), batches)
        ref = {n: [0.0] * (4 - n) for n in (1, 2)}
        count = 0
        for x, _ in batches:
            hs = model.encoder(input_ids=x, attention_mask=x.ne(0).long(), output_hidden_states=True).hidden_states
            last = x.ne(0).sum(1) - 1
            rows = torch.arange(len(x))
            for n in ref:
                for start in range(4 - n):
                    cos = torch.nn.functional.cosine_similarity(hs[start][rows, last], hs[start + n][rows, last], dim=-1)
                    ref[n][start] += float(torch.arccos(cos.clamp(-1, 1)).sum() / torch.pi)
            count += len(x)
    assert sim["sequences"] == count and set(sim["block_angular"]) == {1, 2}
    for n in ref:
        assert sim["block_angular"][n] == pytest.approx([v / count for v in ref[n]], rel=1e-4, abs=1e-6)


def test_pruned_and_trimmed_model_reloads_in_a_fresh_process(tiny_classifier, token_batches, tmp_path):
    model = tiny_classifier(layers=3, heads=4, ffn=32)
    prune_heads(model, {0: [0], 1: [1, 2, 3], 2: [2]})
    prune_ffn(model, {0: list(range(10)), 2: [0, 31]})
    model = keep_layers(model, [0, 2])
    x, _ = token_batches(1)[0]
    path = save_text_model(tmp_path / "m.pt", model)
    torch.save({"x": x, "logits": model(x).detach()}, tmp_path / "ref.pt")
    code = (
        "import torch; from coursekit.textmodels import load_text_model\n"
        f"m, _ = load_text_model({str(path)!r})\n"
        f"ref = torch.load({str(tmp_path / 'ref.pt')!r}, weights_only=True)\n"
        "with torch.inference_mode(): assert torch.equal(m(ref['x']), ref['logits']), 'logits differ'\n"
        "assert torch.load(" + repr(str(path)) + ", weights_only=True)['layer_shapes'] == "
        "[{'heads': 3, 'ffn': 22}, {'heads': 3, 'ffn': 30}]\n"
        "print('ok')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-2000:]
    reloaded, _ = load_text_model(path)
    assert layer_shapes(reloaded) == layer_shapes(model)


def test_reshape_layers_refuses_a_wrong_layer_count(tiny_classifier):
    with pytest.raises(ValueError, match="3 layers"):
        reshape_layers(tiny_classifier(layers=3), [{"heads": 1, "ffn": 4}])


def test_exercise_checkers_accept_the_solution_and_reject_a_wrong_one():
    def rows(w, b, keep, d):
        idx = torch.tensor([j * d + t for j in keep for t in range(d)])
        return w[idx], b[idx]

    assert checks.check_keep_head_rows(rows)
    with pytest.raises(AssertionError):
        checks.check_keep_head_rows(lambda w, b, keep, d: (w[: len(keep) * d], b[: len(keep) * d]))
    assert checks.check_keep_head_columns(lambda w, keep, d: w[:, [j * d + t for j in keep for t in range(d)]])
    with pytest.raises(AssertionError):
        checks.check_keep_head_columns(lambda w, keep, d: w[:, : len(keep) * d])

    def bi(a, b, m):
        return float(1 - torch.nn.functional.cosine_similarity(a[m.bool()], b[m.bool()], dim=-1).mean())

    assert checks.check_block_influence(bi)
    with pytest.raises(AssertionError):
        checks.check_block_influence(lambda a, b, m: float(1 - torch.nn.functional.cosine_similarity(a, b, dim=-1).mean()))


def test_a_user_written_criterion_runs_through_the_same_path(tiny_classifier, token_batches):
    """Part 2's criteria are pluggable like Part 1's importance functions: a function with the registry's signature
    goes where a name goes, gives what the built-in it imitates gives, and a wrong shape is refused."""
    from coursekit.textprune import FFN_CRITERIA, HEAD_CRITERIA, magnitude_head_importance, weight_ffn_importance

    model = tiny_classifier(heads=4, ffn=32)

    def my_heads(m, batches, *, max_batches=None):  # the magnitude criterion, written by a student
        return magnitude_head_importance(m, batches, max_batches=max_batches) * 2.0

    ranked = heads_to_remove(head_importance(model, criterion=my_heads), 6)
    assert ranked == heads_to_remove(head_importance(model, criterion="magnitude"), 6)
    with pytest.raises(ValueError, match=r"\(layers, max heads\) = \(3, 4\)"):
        head_importance(model, criterion=lambda m, b, *, max_batches=None: torch.zeros(3))
    assert set(HEAD_CRITERIA) == {"gradient", "magnitude"} and set(FFN_CRITERIA) == {"activation", "weight"}

    def my_ffn(m, batches, *, pad_id=0, max_batches=None):
        return [s + 1.0 for s in weight_ffn_importance(m)]

    assert ffn_to_remove(ffn_importance(model, criterion=my_ffn), 20) == \
        ffn_to_remove(ffn_importance(model, criterion="weight"), 20)
    with pytest.raises(ValueError, match="one \\(F_layer,\\) tensor per layer"):
        ffn_importance(model, criterion=lambda m, b, *, pad_id=0, max_batches=None: [torch.zeros(32)])

    def middle_first(k, num_layers, scores, *, keep_first=False):  # needs no scores
        mid = num_layers // 2
        return [mid + i for i in range(k)]

    assert layers_by_criterion(middle_first, 2, 6) == [3, 4]
    scores = {"angular": [0.3, 0.1, 0.2, 0.5, 0.4, 0.6], "block_influence": [0.1] * 6}
    assert layers_by_criterion(lambda k, n, s, *, keep_first=False: sorted(range(n), key=s["angular"].__getitem__)[:k],
                               2, 6, scores) == layers_by_criterion("angular", 2, 6, scores)
    with pytest.raises(ValueError, match="returns 2 distinct indices in 0..5"):
        layers_by_criterion(lambda k, n, s, *, keep_first=False: [1, 1], 2, 6)


def test_the_pruning_plan_check_counts_macs_judges_both_targets_and_refuses_a_bad_plan(tiny_classifier):
    model = tiny_classifier(heads=4, ffn=32)
    plan = ({0: [0, 1], 1: [2]}, {i: list(range(16)) for i in range(3)})
    out = checks.check_pruning_plan(model, plan, accuracy_of=lambda m: 0.5, reference_accuracy=0.51, seq_len=8,
                                    max_macs_ratio=0.95, max_drop=2.0)
    assert 0.3 < out["macs_ratio"] < 0.95 and abs(out["drop_points"] - 1.0) < 1e-9
    with pytest.raises(AssertionError, match="keeps .* of the MACs"):
        checks.check_pruning_plan(model, ({}, {}), accuracy_of=lambda m: 0.5, reference_accuracy=0.5, seq_len=8,
                                  max_macs_ratio=0.95, max_drop=2.0)
    with pytest.raises(AssertionError, match="dev accuracy fell 5.00 points"):
        checks.check_pruning_plan(model, plan, accuracy_of=lambda m: 0.45, reference_accuracy=0.5, seq_len=8,
                                  max_macs_ratio=0.95, max_drop=2.0)
    assert checks.check_pruning_plan(model, plan, accuracy_of=lambda m: 0.45, reference_accuracy=0.5, seq_len=8,
                                     max_macs_ratio=0.95, max_drop=2.0, judge="size")["drop_points"] > 2
    with pytest.raises(ValueError, match="plan: list is not allowed"):
        checks.check_pruning_plan(model, [{}, {}], accuracy_of=lambda m: 0.5, reference_accuracy=0.5, seq_len=8,
                                  max_macs_ratio=0.95, max_drop=2.0)
