"""Exercise checkers of Part 2 (text and language models, chapters 07-10).

Each check runs a student's function on small hand-made cases, raises AssertionError with a hint (``hints.fail``)
when it is wrong and returns True when it passes, so a notebook cell can end with it.
"""

from __future__ import annotations

import copy

import torch

from .hints import fail, judge_targets, judged_note

__all__ = [
    "check_max_pool", "check_lora_params", "check_embedding_share", "check_student_layers", "check_layer_map",
    "check_hidden_loss", "check_keep_head_rows", "check_keep_head_columns", "check_block_influence",
    "check_perplexity_from_losses", "check_wanda_score", "check_mask_2_4", "check_pruning_plan", "check_llm_plan",
    "check_lora_plan",
]


def check_max_pool(max_pool) -> bool:
    """Exercise 07.1: ``max_pool(hidden (N, L, H), mask (N, L)) -> (N, H)`` the largest value over real tokens only."""
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, 5, 4, generator=g) - 3  # all negative: a padding zero would win a careless max
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]])
    want = torch.stack([hidden[0].max(0).values, hidden[1, :2].max(0).values, hidden[2, 0]])
    got = max_pool(hidden, mask)
    if tuple(got.shape) != (3, 4):
        fail(f"max_pool returned shape {tuple(got.shape)}, expected (3, 4).", "take the maximum over the token dimension (dim 1).")
    if not torch.allclose(got, want, atol=1e-6):
        fail("max_pool gives wrong values on padded sentences.",
              "multiplying by the mask is not enough for a max: a padding 0 beats negative values.",
              "padded positions must hold -inf before the maximum is taken.")
    return True


def check_lora_params(lora_params) -> bool:
    """Exercise 07.2: ``lora_params(d, k, r) -> int`` parameters of a rank-r adapter on a d x k weight."""
    for d, k, r in [(384, 384, 8), (1536, 384, 4), (10, 20, 1)]:
        want = r * (d + k)
        got = lora_params(d, k, r)
        if got != want:
            fail(f"lora_params({d}, {k}, {r}) returned {got}, expected {want}.",
                  "the update is B @ A with B of shape (d, r) and A of shape (r, k).")
    return True


def check_embedding_share(embedding_share) -> bool:
    """Exercise 07.3: ``embedding_share(model) -> float`` share of a TextClassifier's parameters in its token table."""
    from transformers import BertConfig, BertModel

    from .textmodels import TextClassifier

    cfg = BertConfig(vocab_size=100, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
                     max_position_embeddings=16)
    model = TextClassifier(BertModel(cfg), 2)
    want = 800 / sum(p.numel() for p in model.parameters())
    got = float(embedding_share(model))
    if abs(got - want) > 1e-6:
        fail(f"embedding_share returned {got:.4f} on a toy BERT, expected {want:.4f}.",
              "the token table is one matrix, vocabulary x hidden size; position and token-type embeddings are not "
              "part of it.", "share = (elements of the word-embedding matrix) / (all parameters of the model, head "
              "included).")
    return True


def check_student_layers(student_layers) -> bool:
    """Exercise 08.1: ``student_layers(num_teacher_layers, keep) -> list[int]`` every other layer, from the first."""
    for n, k, want in [(6, 3, [0, 2, 4]), (12, 6, [0, 2, 4, 6, 8, 10]), (6, 2, [0, 3]), (4, 4, [0, 1, 2, 3])]:
        got = list(student_layers(n, k))
        if got != want:
            fail(f"student_layers({n}, {k}) returned {got}, expected {want}.",
                  "keep layers spread evenly over the teacher, starting at layer 0.",
                  "the i-th kept layer (i = 0 .. k-1) is floor(i n / k).")
    return True


def check_layer_map(layer_map) -> bool:
    """Exercise 08.2: ``layer_map(student_layers, teacher_layers) -> dict`` student hidden index -> teacher hidden
    index, spread uniformly (TinyBERT's mapping; index 0 is the embeddings, k the output of layer k)."""
    for s, t, want in [(3, 6, {1: 2, 2: 4, 3: 6}), (4, 12, {1: 3, 2: 6, 3: 9, 4: 12}), (2, 6, {1: 3, 2: 6}),
                       (6, 6, {i: i for i in range(1, 7)})]:
        got = dict(layer_map(s, t))
        if got != want:
            fail(f"layer_map({s}, {t}) returned {got}, expected {want}.",
                  "student layer k (1-based) stands for teacher layer floor(k T / S), with S student and T teacher layers; "
                  "the last student layer always meets the teacher's last.")
    return True


def check_hidden_loss(hidden_loss) -> bool:
    """Exercise 08.3: ``hidden_loss(s (N, L, H), t (N, L, H), mask (N, L)) -> scalar`` mean of 1 - cosine over real
    tokens."""
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 4, 6, generator=g), torch.randn(2, 4, 6, generator=g)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    m = mask.bool()
    want = (1 - F.cosine_similarity(s[m], t[m], dim=-1)).mean()
    got = hidden_loss(s, t, mask)
    if abs(float(got) - float(want)) > 1e-5:
        all_tokens = (1 - F.cosine_similarity(s, t, dim=-1)).mean()
        if abs(float(got) - float(all_tokens)) < 1e-5:
            fail("padding positions were counted.",
                  "only real tokens count: select them with the mask before comparing (a tokens x H matrix).")
        fail(f"hidden_loss returned {float(got):.5f}, expected {float(want):.5f}.",
              "L = mean over the real tokens t of (1 - cos(s_t, t_t)), the cosine taken over the hidden dimension.")
    if hidden_loss(t, t, mask).abs() > 1e-5:
        fail("identical hidden states must give 0.", "1 - cos(x, x) = 0.")
    return True


def check_keep_head_rows(keep_head_rows) -> bool:
    """Exercise 09.1: ``keep_head_rows(weight (h*d, H), bias (h*d,), keep [head indices], d) -> (weight, bias)``:
    the rows of a Q, K or V projection that belong to the kept heads, in order."""
    g = torch.Generator().manual_seed(0)
    w, b = torch.randn(4 * 3, 5, generator=g), torch.randn(4 * 3, generator=g)
    keep = [0, 2, 3]
    got_w, got_b = keep_head_rows(w, b, keep, 3)
    want = torch.cat([torch.arange(j * 3, j * 3 + 3) for j in keep])
    if tuple(got_w.shape) != (9, 5):
        fail(f"the weight has shape {tuple(got_w.shape)}, expected (9, 5): 3 kept heads x 3 rows each, 5 inputs.",
              "nn.Linear stores (out_features, in_features): heads are groups of d rows.")
    if not torch.equal(got_w, w[want]) or not torch.equal(got_b, b[want]):
        if torch.equal(got_w, w[:9]):
            fail("you kept the first rows, not the rows of the kept heads.", "head j owns rows j*d to (j+1)*d - 1.")
        fail("the rows (or bias entries) kept are not those of heads 0, 2 and 3.",
              "for each kept head j, in order, its d rows j d ... (j + 1) d - 1; the bias entries at the same "
              "positions.")
    return True


def check_keep_head_columns(keep_head_columns) -> bool:
    """Exercise 09.2: ``keep_head_columns(weight (H, h*d), keep, d) -> weight (H, len(keep)*d)``: the columns of the
    attention output projection that read the kept heads' contexts."""
    g = torch.Generator().manual_seed(1)
    w = torch.randn(5, 4 * 2, generator=g)
    keep = [1, 3]
    got = keep_head_columns(w, keep, 2)
    want = w[:, [2, 3, 6, 7]]
    if tuple(got.shape) != (5, 4):
        fail(f"shape {tuple(got.shape)}, expected (5, 4).", "the output projection reads heads along dim 1 (columns).")
    if not torch.equal(got, want):
        fail("the columns kept are not those of heads 1 and 3.",
              "the same positions as for the rows of Q, K and V, taken along the columns (dimension 1).")
    return True


def check_block_influence(block_influence) -> bool:
    """Exercise 09.3: ``block_influence(x_in (N, L, H), x_out (N, L, H), mask (N, L)) -> float``: 1 - mean cosine over
    real tokens (ShortGPT)."""
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(2, 4, 6, generator=g), torch.randn(2, 4, 6, generator=g)
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    want = float(1 - F.cosine_similarity(a[mask.bool()], b[mask.bool()], dim=-1).mean())
    got = float(block_influence(a, b, mask))
    if abs(got - want) > 1e-5:
        if abs(got - float(1 - F.cosine_similarity(a, b, dim=-1).mean())) < 1e-5:
            fail("padding positions were counted.", "compare the real tokens only: select them with the mask first.")
        fail(f"returned {got:.5f}, expected {want:.5f}.",
              "BI = 1 - mean over real tokens of cos(x_in, x_out), the cosine over the hidden dimension.")
    if abs(float(block_influence(a, 3 * a, mask))) > 1e-5:
        fail("a layer that only rescales its input has influence 0.", "cosine ignores length: cos(x, 3x) = 1.")
    return True


def check_perplexity_from_losses(perplexity_from_losses) -> bool:
    """Exercise 10.1: ``perplexity_from_losses(losses (T,) nats) -> float`` = exp(mean)."""
    import math

    losses = torch.tensor([0.5, 2.0, 3.5, 1.0])
    got = float(perplexity_from_losses(losses))
    want = math.exp(1.75)
    if abs(got - want) > 1e-4 * want:
        if abs(got - float(torch.exp(losses).mean())) < 1e-3:
            fail("you averaged the exponentials.", "exponentiate the mean loss: exp(mean), not mean(exp).")
        if abs(got - 1.75) < 1e-4:
            fail("you returned the mean loss.", "perplexity is exp of the mean loss.")
        fail(f"returned {got:.4f}, expected {want:.4f}.", "PPL = exp((1 / T) * sum over t of l_t).")
    if abs(float(perplexity_from_losses(torch.zeros(3))) - 1.0) > 1e-6:
        fail("a model that is always certain and right has perplexity 1.", "exp(0) = 1.")
    return True


def check_wanda_score(wanda_score) -> bool:
    """Exercise 10.2: ``wanda_score(weight (out, in), x (tokens, in)) -> (out, in)`` = |W| * ||X_j||_2."""
    g = torch.Generator().manual_seed(3)
    w, x = torch.randn(3, 4, generator=g), torch.randn(10, 4, generator=g)
    want = w.abs() * x.norm(dim=0)
    got = wanda_score(w, x)
    if tuple(got.shape) != (3, 4):
        fail(f"shape {tuple(got.shape)}, expected (3, 4).", "one score per weight.")
    if not torch.allclose(got, want, atol=1e-5):
        if torch.allclose(got, w.abs() * x.norm(dim=1)[:4], atol=1e-5):
            fail("you took norms over the wrong dimension.", "||X_j|| is the norm of input feature j over tokens: dim=0.")
        fail("the scores differ from |W| * ||X_j||.",
              "S_ij = |W_ij| * ||X_j||_2: column j of |W| scaled by the norm of input feature j over the tokens.")
    return True


def check_mask_2_4(mask_2_4) -> bool:
    """Exercise 10.3: ``mask_2_4(scores (out, in)) -> bool (out, in)``: the 2 largest of every 4 consecutive."""
    g = torch.Generator().manual_seed(4)
    s = torch.randn(3, 8, generator=g)
    got = mask_2_4(s)
    if got.dtype != torch.bool or tuple(got.shape) != (3, 8):
        fail(f"expected a bool mask of shape (3, 8), got {got.dtype} {tuple(got.shape)}.", "return a boolean tensor.")
    groups = got.reshape(3, 2, 4)
    if not (groups.sum(-1) == 2).all():
        fail("every group of 4 must keep exactly 2.", "look at each row in groups of 4 consecutive scores.",
              "in each group of 4 the 2 largest scores are kept (True), the other 2 dropped.")
    kept_min = torch.where(groups, s.reshape(3, 2, 4), torch.inf).amin(-1)
    dropped_max = torch.where(~groups, s.reshape(3, 2, 4), -torch.inf).amax(-1)
    if not (kept_min >= dropped_max).all():
        fail("a kept score is smaller than a dropped one in the same group.",
              "in each group the two kept scores must be the two largest.")
    return True


def check_pruning_plan(model, plan, *, accuracy_of, reference_accuracy: float, seq_len: int, max_macs_ratio: float,
                       max_drop: float, judge: str = "all") -> dict:
    """Exercise 09.4, a numeric target: ``plan`` = (heads, neurons), the heads {layer: [head indices]} and FFN
    neurons {layer: [neuron indices]} to remove (what ``textprune.heads_to_remove`` and ``ffn_to_remove`` return).
    A copy of ``model`` (a TextClassifier) is pruned, not recovered; it must keep at most ``max_macs_ratio`` of the
    model's MACs per ``seq_len``-token sentence and lose at most ``max_drop`` points of ``accuracy_of`` (the dev
    split) against ``reference_accuracy``. ``judge``: "all", "size" or "none" (the profile's ``exercise_judge``).
    Returns {"macs_ratio", "accuracy", "drop_points"}."""
    from .textmodels import count_text_macs
    from .textprune import prune_ffn, prune_heads

    judged = judged_note(judge)
    if not (isinstance(plan, tuple) and len(plan) == 2 and all(isinstance(p, dict) for p in plan)):
        raise ValueError(f"plan: {type(plan).__name__} is not allowed; return a pair (heads, neurons) of dicts "
                         "{layer: [indices to remove]} (an empty dict removes nothing)")
    heads, neurons = plan
    pruned = copy.deepcopy(model).eval()
    if heads:
        pruned = prune_heads(pruned, heads)
    if neurons:
        pruned = prune_ffn(pruned, neurons)
    ratio = count_text_macs(pruned, seq_len) / count_text_macs(model, seq_len)
    accuracy = float(accuracy_of(pruned))
    drop = 100 * (reference_accuracy - accuracy)
    print(f"{sum(map(len, heads.values()))} heads and {sum(map(len, neurons.values()))} FFN neurons removed: "
          f"{ratio:.1%} of the MACs (target <= {max_macs_ratio:.0%}) | dev accuracy {accuracy:.2%} against "
          f"{reference_accuracy:.2%}: {-drop:+.2f} points (target >= {-max_drop:+.2f}) | {judged}")
    judge_targets(
        judge, ratio=ratio, max_ratio=max_macs_ratio, drop=drop, max_drop=max_drop,
        size_failure=(f"the pruned model keeps {ratio:.1%} of the MACs; the target is at most {max_macs_ratio:.0%}.",
                      "The FFN holds about two thirds of a layer's MACs, the heads' projections about a third: cut "
                      "both."),
        accuracy_failure=(f"dev accuracy fell {drop:.2f} points with no recovery; at most {max_drop:.2f} allowed.",
                          "Half of either part alone costs more than that (section 4 and 5): take a moderate share "
                          "of each.",
                          "Rank globally with the data-driven scores (gradient for heads, activation for neurons) and "
                          "try a few pairs of cuts on the dev split; about a third of the heads and a quarter of the "
                          "neurons is a place to start."))
    return {"macs_ratio": ratio, "accuracy": accuracy, "drop_points": drop}


def check_llm_plan(model, plan, *, importance, perplexity_of, reference_perplexity: float, max_params_ratio: float,
                   max_ppl_ratio: float, judge: str = "all") -> dict:
    """Exercise 10.4, a numeric target: ``plan`` = (layers, neurons, heads_per_group): the decoder layers to remove
    (indices), then the MLP neurons per layer and query heads per key-value group to keep in the layers left, the
    best by ``importance`` (``llmwidth.width_importance`` of ``model``). A copy of ``model`` is cut that way, not
    healed; its decoder layers must keep at most ``max_params_ratio`` of their parameters and its perplexity
    (``perplexity_of``, on held-out validation windows) be at most ``max_ppl_ratio`` times ``reference_perplexity``
    (the uncut model's on the same windows). ``judge``: "all", "size" or "none" (the profile's ``exercise_judge``).
    Returns {"params_ratio", "perplexity", "ppl_ratio"}."""
    from .llm import decoder_layers, keep_decoder_layers, layers_kept
    from .llmwidth import prune_width

    judged = judged_note(judge)
    if not (isinstance(plan, tuple) and len(plan) == 3):
        raise ValueError(f"plan: {type(plan).__name__} is not allowed; return a triple (layers to remove, neurons per "
                         "layer, query heads per key-value group)")
    layers, neurons, per_group = plan
    kept = layers_kept(layers, len(decoder_layers(model)))  # checked before the copy
    cut = prune_width(model, importance, neurons=neurons, heads_per_group=per_group)  # the one copy of the model
    keep_decoder_layers(cut, kept)  # each layer's width cut does not need the others

    def decoder_params(m):
        return sum(p.numel() for p in decoder_layers(m).parameters())

    ratio = decoder_params(cut) / decoder_params(model)
    ppl = float(perplexity_of(cut))
    ppl_ratio = ppl / reference_perplexity
    print(f"{len(layers)} layers removed, {neurons} neurons and {per_group} heads per group kept: {ratio:.1%} of the "
          f"decoder-layer parameters (target <= {max_params_ratio:.0%}) | perplexity {ppl:.2f} against "
          f"{reference_perplexity:.2f}: {ppl_ratio:.2f}x (target <= {max_ppl_ratio:.2f}x) | {judged}")
    judge_targets(
        judge, ratio=ratio, max_ratio=max_params_ratio, drop=ppl_ratio, max_drop=max_ppl_ratio,
        tolerance=0.0,  # a perplexity ratio, not points: no spread between CPUs measured for it
        size_failure=(f"the cut keeps {ratio:.1%} of the decoder-layer parameters; the target is at most "
                      f"{max_params_ratio:.0%}.",
                      "Every layer removed takes 1/n of them; every MLP neuron removed from all layers takes three "
                      "rows or columns of the hidden size in each (the MLP is three quarters of a layer)."),
        accuracy_failure=(f"perplexity {ppl_ratio:.2f}x the uncut model's with no healing; at most "
                          f"{max_ppl_ratio:.2f}x allowed.",
                          "Sections 4 and 7 measured what each axis costs at 20%: compare plans of each kind on these "
                          "windows before you go further.",
                          "On this model the MLP's neurons were the cheapest parameters to lose, whole layers dearer "
                          "and query heads dearest: spend the budget where it costs least."))
    return {"params_ratio": ratio, "perplexity": ppl, "ppl_ratio": ppl_ratio}


def check_lora_plan(model, *, accuracy_of, reference_accuracy: float, max_stored_kb: float, max_drop: float,
                    judge: str = "all") -> dict:
    """Exercise 07.4, a numeric target: ``model`` is the student's LoRA plan (rank and target modules) built with
    ``peft.get_peft_model`` and trained with the chapter's LoRA schedule. What one more task must store, its
    adapters and its trained head (peft's adapter state dict, float32), must fit in ``max_stored_kb`` kB, and its dev
    accuracy (``accuracy_of``) must be at most ``max_drop`` points below ``reference_accuracy`` (the full
    fine-tune's, on dev). ``judge``: "all", "size" or "none" (the profile's ``exercise_judge``).
    Returns {"stored_kb", "accuracy", "drop_points"}."""
    from peft import get_peft_model_state_dict

    judged = judged_note(judge)
    if not hasattr(model, "peft_config"):
        raise ValueError(f"model: {type(model).__name__} is not allowed; build the plan with peft.get_peft_model")
    stored = sum(t.numel() * 4 for t in get_peft_model_state_dict(model).values()) / 1e3
    accuracy = float(accuracy_of(model))
    drop = 100 * (reference_accuracy - accuracy)
    cfg = next(iter(model.peft_config.values()))
    print(f"LoRA r={cfg.r} on {sorted(cfg.target_modules) if isinstance(cfg.target_modules, set) else cfg.target_modules}: "
          f"{stored:,.1f} kB stored per task (target <= {max_stored_kb:,.0f} kB) | dev accuracy {accuracy:.2%} against "
          f"the full fine-tune's {reference_accuracy:.2%}: {-drop:+.2f} points (target >= {-max_drop:+.2f}) | {judged}")
    judge_targets(
        judge, ratio=stored, max_ratio=max_stored_kb, drop=drop, max_drop=max_drop,
        size_failure=(f"{stored:,.1f} kB per task; the target is at most {max_stored_kb:,.0f} kB.",
                      "An adapter on nn.Linear(k, d) stores r (d + k) numbers (exercise 2): fewer matrices, a smaller "
                      "rank, or both."),
        accuracy_failure=(f"dev accuracy {drop:.2f} points below the full fine-tune; at most {max_drop:.2f} allowed.",
                          "Section 8's adapters sat on every linear layer: which of them matter most for a new task?",
                          "Spend the budget where the update is most useful; compare two or three plans on the dev "
                          "split, each trained with the same schedule."))
    return {"stored_kb": stored, "accuracy": accuracy, "drop_points": drop}
