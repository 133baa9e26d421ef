"""Exercise checkers of Part 1 (images, chapters 00-06) and the numeric-target check of their exercises.

Each check runs a student's function on small hand-made cases, raises AssertionError with a hint (``hints.fail``)
when it is wrong and returns True when it passes, so a notebook cell can end with it.
"""

from __future__ import annotations

import torch
from torch import nn

from .hints import fail, judge_targets, judged_note

__all__ = [
    "check_conv_params", "check_conv_macs", "check_accuracy", "check_ideal_speedup", "check_soften",
    "check_kl_term", "check_distill_loss", "check_replace_head", "check_l2sp",
    "check_freeze_all_but_last_stage", "check_magnitude_mask", "check_global_threshold", "check_agp_sparsity",
    "check_l1_filter_importance", "check_prune_conv_bn", "check_prune_in_channels", "check_angular_distance",
    "check_blocks_to_drop", "check_replace_with_identity", "check_compound_ratio", "check_pareto_front",
    "check_pick_deployable", "check_target",
]


def check_conv_params(conv_params) -> bool:
    """Exercise 00.1: ``conv_params(c_in, c_out, k, bias) -> int`` parameters of a k x k Conv2d."""
    for c_in, c_out, k, bias in [(3, 16, 3, False), (16, 32, 3, True), (64, 10, 1, True), (1, 1, 5, False)]:
        want = sum(p.numel() for p in nn.Conv2d(c_in, c_out, k, bias=bias).parameters())
        got = conv_params(c_in, c_out, k, bias)
        if got != want:
            fail(f"conv_params({c_in}, {c_out}, {k}, bias={bias}) returned {got}, expected {want}.",
                  "each of the c_out filters has c_in * k * k weights, plus one bias per filter when bias=True.")
    return True


def check_conv_macs(conv_macs) -> bool:
    """Exercise 00.2: ``conv_macs(c_in, c_out, k, h_out, w_out) -> int`` MACs of one conv on one image."""
    from torch.utils.flop_counter import FlopCounterMode

    for c_in, c_out, k, size, stride in [(3, 16, 3, 32, 1), (16, 32, 3, 32, 2), (8, 8, 1, 7, 1)]:
        conv = nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2, bias=False)
        x = torch.zeros(1, c_in, size, size)
        with FlopCounterMode(display=False) as counter:
            out = conv(x)
        want = counter.get_total_flops() // 2
        got = conv_macs(c_in, c_out, k, out.shape[2], out.shape[3])
        if got != want:
            fail(f"conv_macs({c_in}, {c_out}, {k}, {out.shape[2]}, {out.shape[3]}) returned {got}, expected {want}.",
                  "every output value (c_out * h_out * w_out of them) needs c_in * k * k multiply-accumulates.")
    return True


def check_accuracy(accuracy) -> bool:
    """Exercise 00.3: ``accuracy(logits, y) -> float`` share of rows whose argmax equals the label."""
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.1, 0.3, 0.2], [0.0, 0.0, 5.0], [1.0, 2.0, 3.0]])
    y = torch.tensor([0, 2, 2, 1])
    got = float(accuracy(logits, y))
    if abs(got - 0.5) > 1e-6:
        fail(f"accuracy returned {got} on a case whose answer is 0.5.",
              "the predicted class of a row is the position of its largest logit; accuracy is the share of rows where it "
              "equals the label.",
              "accuracy = (1/N) * (number of rows i whose largest logit is at position y_i), a float in [0, 1].")
    if abs(float(accuracy(logits[:1], y[:1])) - 1.0) > 1e-6:
        fail("accuracy of a single correct prediction should be 1.0.", "divide by the number of rows, not a constant.")
    return True


def check_ideal_speedup(ideal_speedup) -> bool:
    """Exercise 00.4: ``ideal_speedup(macs_big, macs_small) -> float`` the speedup if time followed MACs."""
    for big, small in [(100, 25), (41_000_000, 12_900_000), (7, 7)]:
        got = float(ideal_speedup(big, small))
        if abs(got - big / small) > 1e-9 * big / small:
            fail(f"ideal_speedup({big}, {small}) returned {got}, expected {big / small}.",
                  "if latency were proportional to MACs, the speedup is the ratio of the two MAC counts (big / small).")
    return True


# ----------------------------------------------------------------------------- 02_knowledge_distillation

def _kd_cases():
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g) * 2, torch.randint(0, 5, (6,), generator=g), T)
            for T in (1.0, 2.0, 4.0)]


def check_soften(soften) -> bool:
    """Exercise 02.1: ``soften(logits, T)`` = softmax(logits / T) over the classes."""
    import torch.nn.functional as F

    z = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    for T in (1.0, 4.0):
        got = soften(z, T)
        if not torch.allclose(got.sum(dim=-1), torch.ones(2), atol=1e-5):
            fail(f"soften(z, {T}) rows do not sum to 1.", "normalise over the last (class) dimension.")
        if not torch.allclose(got, F.softmax(z / T, dim=-1), atol=1e-6):
            fail(f"soften(z, {T}) returned {got.tolist()}.", "divide the logits by T before the exponential, not after.")
    big = torch.tensor([[1000.0, 0.0, -1000.0], [500.0, 500.0, 0.0]])
    got = soften(big, 1.0)
    if not torch.isfinite(got).all() or not torch.allclose(got, F.softmax(big, dim=-1), atol=1e-6):
        fail(f"soften of logits of size 1000 returned {got.tolist()}.",
              "exp(1000) overflows to inf: the logits must be made smaller before the exponential, without changing "
              "the result.", "softmax(z) = softmax(z - max(z)): subtract each row's maximum first (the ratios do not change).")
    return True


def check_kl_term(kl_term) -> bool:
    """Exercise 02.2: ``kl_term(s, t, T)`` = T^2 * KL(softmax(t/T) || softmax(s/T)), batch mean."""
    import torch.nn.functional as F

    for s, t, _, T in _kd_cases():
        want = F.kl_div(F.log_softmax(s / T, 1), F.softmax(t / T, 1), reduction="batchmean") * T * T
        got = kl_term(s, t, T)
        if abs(float(got) - float(want)) > 1e-5:
            zero = float(kl_term(s, s, T))
            if abs(zero) > 1e-6:
                fail(f"kl_term(s, s, {T}) = {zero:.4f}, but a distribution's KL to itself is 0.",
                      "KL(p_t || p_s) = sum over classes of p_t * (log p_t - log p_s), both logs from log_softmax.")
            if abs(float(got) * T * T - float(want)) < 1e-5 or abs(float(got) - float(want) / (T * T)) < 1e-5:
                fail(f"kl_term(..., T={T}) is off by a factor T^2.", "multiply the KL by T**2 (Hinton et al. 2015).")
            fail(f"kl_term(..., T={T}) returned {float(got):.5f}, expected {float(want):.5f}.",
                  "the KL of one example is a sum over its classes; the batch's loss is the mean of those sums over the "
              "examples (PyTorch calls it batchmean), not the mean over every entry.")
    return True


def check_distill_loss(distill_loss) -> bool:
    """Exercise 02.3: ``distill_loss(s, t, y, T, alpha)`` = (1 - alpha) * CE + alpha * T^2 * KL."""
    import torch.nn.functional as F

    from .distill import kd_loss

    for s, t, y, T in _kd_cases():
        for alpha in (0.0, 0.5, 0.9):
            got, want = float(distill_loss(s, t, y, T, alpha)), float(kd_loss(s, t, y, T, alpha))
            if abs(got - want) > 1e-5:
                hint = ("with alpha = 0 the loss must be the plain cross-entropy." if alpha == 0 else
                        "weight the hard term by (1 - alpha) and the T^2-scaled KL term by alpha.")
                fail(f"distill_loss(..., T={T}, alpha={alpha}) returned {got:.5f}, expected {want:.5f}.", hint)
    if abs(float(distill_loss(*_kd_cases()[0][:3], 4.0, 0.0)) - float(F.cross_entropy(*_kd_cases()[0][::2]))) > 1e-5:
        fail("alpha = 0 should give plain cross-entropy.", "the soft term's weight is alpha.")
    return True


# ----------------------------------------------------------------------------- 01_transfer_learning

def check_replace_head(replace_head) -> bool:
    """Exercise 01.1: ``replace_head(model, num_classes)`` returns the model with a new ``fc`` for num_classes."""
    from .models import ResNetCifar

    torch.manual_seed(0)
    m = ResNetCifar((1, 1, 1), 4, num_classes=10)
    backbone = {k: v.clone() for k, v in m.state_dict().items() if not k.startswith("fc.")}
    old_head = m.fc.weight.detach().clone()
    out = replace_head(m, 3)
    if out is None or not isinstance(getattr(out, "fc", None), nn.Linear):
        fail("replace_head did not return a model with a Linear fc.",
              "the function must return the model, its head (fc) replaced by a new linear layer.",
              "a fresh linear layer from the backbone's feature width to num_classes takes the place of fc; the model is "
              "returned.")
    if out.fc.out_features != 3 or out.fc.in_features != 16:
        fail(f"the new head maps {out.fc.in_features} -> {out.fc.out_features}, expected 16 -> 3.",
              "keep in_features = model.fc.in_features, the width of the backbone's features.")
    if torch.equal(out.fc.weight[:3].detach(), old_head[:3]):
        fail("the new head reuses rows of the old one.", "create a fresh nn.Linear: old class rows mean nothing for new classes.")
    if any(not torch.equal(backbone[k], v) for k, v in out.state_dict().items() if not k.startswith("fc.")):
        fail("the backbone's weights changed.", "only replace the head; keep every other layer as it is.")
    return True


def check_l2sp(l2sp) -> bool:
    """Exercise 01.2: ``l2sp(model, reference, strength)`` = strength/2 * sum over reference names of ||w - w0||^2."""
    lin = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
    ref = {k: v.clone() for k, v in lin.state_dict().items() if k.startswith("0.")}
    if abs(float(torch.as_tensor(l2sp(lin, ref, 1.0)).detach())) > 1e-9:
        fail("the penalty is not zero at the pretrained weights.", "it measures the distance to the reference, w - w0.")
    with torch.no_grad():
        lin[0].weight.add_(1.0)
        lin[1].weight.add_(5.0)
    got = float(torch.as_tensor(l2sp(lin, ref, 0.2)).detach())
    if abs(got - 0.2 / 2 * 4) > 1e-6:
        hint = ("only parameters that have a pretrained value (the names in reference) are pulled back"
                if got > 1 else "strength / 2 times the sum of squared differences")
        fail(f"l2sp returned {got}, expected {0.2 / 2 * 4}.", hint)
    return True


def check_freeze_all_but_last_stage(freeze_all_but_last_stage) -> bool:
    """Exercise 01.3: leave only ``layer3`` and ``fc`` trainable, frozen BatchNorms in eval mode."""
    from .models import ResNetCifar

    m = ResNetCifar((1, 1, 1), 4)
    freeze_all_but_last_stage(m)
    trainable = {n.split(".")[0] for n, p in m.named_parameters() if p.requires_grad}
    if trainable != {"layer3", "fc"}:
        fail(f"trainable stages are {sorted(trainable)}, expected ['fc', 'layer3'].",
              "only the last stage and the head should learn: which parameters belong to them, by name?",
              "every parameter outside layer3 and fc gets requires_grad = False; those two keep True.")
    m.train()
    m(torch.zeros(2, 3, 16, 16))
    if m.layer1[0].bn1.training:
        fail("a frozen BatchNorm is still in train mode after model.train().",
              "model.train() sets every module to train mode, frozen BatchNorms included: their running statistics "
              "would still move.", "a forward pre-hook on each frozen BatchNorm can put it back in eval mode before "
              "each of its forward passes.")
    return True


# ----------------------------------------------------------------------------- 03_pruning_unstructured

def check_magnitude_mask(magnitude_mask) -> bool:
    """Exercise 03.1: ``magnitude_mask(weight, sparsity)``: 0 for the round(sparsity * numel) smallest |w|, else 1."""
    from torch.nn.utils import prune

    w = torch.tensor([[0.5, -0.1, 2.0], [-3.0, 0.05, -0.7]])
    got = magnitude_mask(w, 0.5)
    want = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 1.0]])
    if got is None or tuple(got.shape) != tuple(w.shape):
        fail("the mask must have the weight's shape.",
              "the mask has the weight's shape: 1 where a weight stays, 0 where it is pruned.")
    if not torch.equal(got.float(), want):
        signed = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
        fail(f"magnitude_mask(w, 0.5) returned {got.tolist()}, expected {want.tolist()}.",
              "rank by absolute value |w|: -3.0 is the largest weight here, not the smallest."
              if torch.equal(got.float(), signed)
              else "the number of pruned weights is the sparsity times the number of weights, rounded; they are those with "
              "the smallest |w|.")
    conv = nn.Conv2d(4, 6, 3)
    for s in (0.0, 0.33, 0.9):
        m = magnitude_mask(conv.weight.detach(), s).float()
        prune.l1_unstructured(conv, "weight", amount=s)
        if not torch.equal(m, conv.weight_mask):
            fail(f"at sparsity {s} the mask differs from torch.nn.utils.prune.l1_unstructured's.",
                  "torch.nn.utils.prune prunes the smallest |w| of the whole tensor, as many as the sparsity times the "
                  "number of weights rounded to the nearest integer.", "with n weights and sparsity s, the "
                  "k = round(s n) smallest magnitudes over the whole tensor get mask 0.")
        prune.remove(conv, "weight")
    return True


def check_global_threshold(global_threshold) -> bool:
    """Exercise 03.2: ``global_threshold(weights, sparsity)``: the k-th smallest |w| over all tensors together."""
    a = torch.tensor([0.1, -0.2, 0.3, 5.0])
    b = torch.tensor([[-0.05, 4.0], [0.15, -6.0]])
    got = float(global_threshold([a, b], 0.5))
    if abs(got - 0.2) > 1e-6:
        per_layer = (abs(got - 0.25) < 1e-6) or (abs(got - 0.15) < 1e-6)
        fail(f"global_threshold([a, b], 0.5) returned {got}, expected 0.2 (4 of the 8 magnitudes are <= 0.2).",
              "pool every |w| of every tensor into one vector first; a per-layer threshold is not global."
              if per_layer else "the threshold is the k-th smallest magnitude among all the weights of all the tensors, k being the "
              "sparsity times their total count, rounded.")
    return True


def check_agp_sparsity(agp) -> bool:
    """Exercise 03.3: ``agp(step, final, begin, end)`` = final * (1 - (1 - (step - begin) / (end - begin))^3) on [begin, end]."""
    from .prune import agp_sparsity

    for step, final, t0, t1 in [(0, 0.8, 0, 100), (50, 0.8, 0, 100), (25, 0.9, 10, 60), (100, 0.5, 10, 60), (5, 0.9, 10, 60)]:
        got, want = float(agp(step, final, t0, t1)), agp_sparsity(step, final, t0, t1)
        if abs(got - want) > 1e-9:
            hint = ("before begin the sparsity is 0 and after end it stays at final: clamp the progress to [0, 1]."
                    if step < t0 or step > t1 else "s_t = s_f * (1 - (1 - progress)**3) with progress = (t - t0) / (t1 - t0).")
            fail(f"agp({step}, {final}, {t0}, {t1}) returned {got}, expected {want}.", hint)
    return True


# ----------------------------------------------------------------------------- 04_pruning_structured

def check_l1_filter_importance(importance) -> bool:
    """Exercise 04.1: ``importance(conv, bn)`` -> (C_out,) L1 norm of every output filter (Li et al. 2017)."""
    conv = nn.Conv2d(2, 3, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[1.0, -2.0], [0.5, 0.5], [-4.0, 0.0]]).view(3, 2, 1, 1))
    got = importance(conv, nn.BatchNorm2d(3))
    want = torch.tensor([3.0, 1.0, 4.0])
    if got is None or tuple(got.shape) != (3,):
        fail(f"expected one score per output channel, shape (3,), got {None if got is None else tuple(got.shape)}.",
              "one score per output filter, from all of its weights (input channels x kernel).",
              "score_i = sum over c, h, w of |W[i, c, h, w]|: the L1 norm of filter i.")
    if not torch.allclose(got.float(), want):
        fail(f"returned {got.tolist()}, expected {want.tolist()}.",
              "the L1 norm sums absolute values; a plain sum lets positive and negative weights cancel."
              if torch.allclose(got.float(), torch.tensor([-1.0, 1.0, -4.0]))
              else "score_i is the sum of the absolute values of filter i's weights.")
    return True


def check_prune_conv_bn(prune_conv_bn) -> bool:
    """Exercise 04.2: ``prune_conv_bn(conv, bn, keep) -> (conv, bn)`` keeping output channels ``keep``."""
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(3, 5, 3, padding=1, bias=False), nn.BatchNorm2d(5)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5), bn.bias.normal_(), bn.running_mean.normal_(), bn.running_var.uniform_(0.5, 2)
    conv.eval(), bn.eval()
    keep = torch.tensor([0, 3, 4])
    new_conv, new_bn = prune_conv_bn(conv, bn, keep)
    if new_conv.out_channels != 3 or new_bn.num_features != 3:
        fail("the new layers should have 3 channels.",
              "the new conv has as many output channels as there are kept channels, and its BatchNorm as many features.")
    new_bn.eval()
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        if not torch.allclose(new_bn(new_conv(x)), bn(conv(x))[:, keep], atol=1e-5):
            stats = torch.allclose(new_bn.running_mean, bn.running_mean[keep])
            fail("the pruned pair does not reproduce the kept channels of the original.",
                  "BatchNorm has four tensors per channel, two learned and two running statistics (running_mean, "
                  "running_var): all four are taken at the kept channels." if not stats else
                  "a conv weight is (out, in, kh, kw): the kept output channels are taken along its first dimension.")
    return True


def check_prune_in_channels(prune_in_channels) -> bool:
    """Exercise 04.3: ``prune_in_channels(conv, keep)``: a conv reading only the input channels ``keep``."""
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 2, 3, padding=1)
    keep = torch.tensor([1, 2])
    new = prune_in_channels(conv, keep)
    if new.in_channels != 2 or new.out_channels != 2:
        fail(f"the new conv maps {new.in_channels} -> {new.out_channels} channels, expected 2 -> 2.",
              "only the input dimension shrinks: as many input channels as were kept, the outputs unchanged.")
    x = torch.randn(1, 4, 5, 5)
    x_zeroed = x.clone()
    x_zeroed[:, [0, 3]] = 0
    with torch.no_grad():
        if not torch.allclose(new(x[:, keep]), conv(x_zeroed), atol=1e-5):
            fail("on the kept channels the new conv must compute what the old one did with the others at zero.",
                  "a conv weight is (out, in, kh, kw): the kept input channels are taken along dimension 1; the bias (one "
                  "per output channel) stays whole.")
    return True


# ----------------------------------------------------------------------------- 05_layer_trimming

def check_angular_distance(angular_distance) -> bool:
    """Exercise 05.1: ``angular_distance(x_in, x_out)``: mean over images and positions of arccos(cos) / pi,
    the cosine taken between the C-vectors at each position of (N, C, H, W) tensors."""
    from .trim import angular_distance as reference

    x = torch.zeros(1, 2, 1, 2)
    x[0, :, 0, 0], x[0, :, 0, 1] = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    y = torch.zeros(1, 2, 1, 2)
    y[0, :, 0, 0], y[0, :, 0, 1] = torch.tensor([2.0, 0.0]), torch.tensor([1.0, 0.0])
    got = float(angular_distance(x, y))
    if abs(got - 0.25) > 1e-4:
        fail(f"on two positions with angles 0 and 90 degrees you returned {got}, expected 0.25.",
              "divide the angle by pi so that the distance lies in [0, 1]." if abs(got - 0.25 * 3.141592653589793) < 1e-4
              else ("d = mean over positions p of arccos(cos(x_p, y_p)) / pi, where x_p and y_p are the channel vectors "
                    "at position p."))
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 4, 5, 5, generator=g), torch.randn(3, 4, 5, 5, generator=g)
    if abs(float(angular_distance(a, b)) - reference(a, b)) > 1e-4:
        fail("on random (3, 4, 5, 5) tensors the value differs from the reference.",
              "flatten to (N*H*W, C) vectors: the cosine is over channels, not over the whole image.")
    return True


def check_blocks_to_drop(blocks_to_drop) -> bool:
    """Exercise 05.2: ``blocks_to_drop(scores, k, allowed)``: the k allowed names with the lowest scores."""
    scores = {"layer1.0": 0.30, "layer1.1": 0.02, "layer2.0": 0.00, "layer2.1": 0.10, "layer3.1": 0.50}
    allowed = ["layer1.0", "layer1.1", "layer2.1", "layer3.1"]
    got = list(blocks_to_drop(scores, 2, allowed))
    if sorted(got) != ["layer1.1", "layer2.1"]:
        hint = ("layer2.0 is not allowed (it downsamples): choose only among `allowed`." if "layer2.0" in got else
                "drop the LEAST important blocks: sort by score ascending." if "layer3.1" in got else
                "sort the allowed names by their score and take the first k.")
        fail(f"blocks_to_drop(scores, 2, allowed) returned {got}, expected ['layer1.1', 'layer2.1'].", hint)
    if list(blocks_to_drop(scores, 0, allowed)) != []:
        fail("k = 0 should drop nothing.", "return the first k names, an empty list for k = 0.")
    return True


def check_replace_with_identity(replace_with_identity) -> bool:
    """Exercise 05.3: ``replace_with_identity(model, name)`` sets the block ``name`` (e.g. "layer1.1") to nn.Identity."""
    from .models import ResNetCifar

    m = ResNetCifar((2, 1, 1), 4)
    out = replace_with_identity(m, "layer1.1")
    out = m if out is None else out
    if not isinstance(out.layer1[1], nn.Identity):
        fail("out.layer1[1] is not an nn.Identity.",
              "the block must be replaced inside its parent (the stage that holds it); rebinding a local name changes "
              "nothing in the model.", "the parent's name is the part before the last dot, the child's the part after "
              "it; an nn.Identity takes the child's place in the parent.")
    if isinstance(out.layer1[0], nn.Identity) or out(torch.zeros(1, 3, 16, 16)).shape != (1, 10):
        fail("other blocks changed or the model no longer runs.", "replace only the named block.")
    return True


# ----------------------------------------------------------------------------- 06_pipeline

def check_compound_ratio(compound_ratio) -> bool:
    """Exercise 06.1: ``compound_ratio(sizes)``: from a list of model sizes along the pipeline (parameters,
    MACs, ...), the total reduction first / last, which is the product of the per-step ratios."""
    got = compound_ratio([1000, 500, 100, 80])
    if abs(got - 12.5) > 1e-9:
        hint = ("reductions multiply, they do not add: 2x then 5x is 10x, not 7x." if abs(got - (2 + 5 + 1.25)) < 1e-9
                else "the total is sizes[0] / sizes[-1] (= the product of the step ratios sizes[i] / sizes[i + 1]).")
        fail(f"compound_ratio([1000, 500, 100, 80]) returned {got}, expected 12.5.", hint)
    if compound_ratio([7]) != 1:
        fail("a pipeline with one model has a reduction of 1.", "the total reduction is the first size over the last.")
    return True


def check_pareto_front(pareto_front) -> bool:
    """Exercise 06.2: ``pareto_front(points)``: indices of the (cost, accuracy) points that no other point beats
    (lower or equal cost and higher accuracy), sorted by cost."""
    pts = [(10, 0.9), (5, 0.8), (6, 0.7), (1, 0.5), (5, 0.85)]
    got = list(pareto_front(pts))
    if got != [3, 4, 0]:
        hint = ("(6, 0.70) is dominated by (5, 0.85): cheaper AND more accurate." if 2 in got else
                "(5, 0.80) is dominated by (5, 0.85): same cost, less accurate." if 1 in got else
                "sort by cost, walk from cheap to expensive and keep a point only when its accuracy beats every cheaper one.")
        fail(f"pareto_front returned {got} for {pts}, expected [3, 4, 0].", hint)
    return True


def check_pick_deployable(pick_deployable) -> bool:
    """Exercise 06.3: ``pick_deployable(records, key, budget_ms)``: the name of the most accurate ledger record whose
    ``latency_ms[key]`` is within the budget, None when none is."""
    recs = [{"model": "teacher", "accuracy": 0.90, "latency_ms": {"cpu_b64": 9.0}},
            {"model": "student", "accuracy": 0.84, "latency_ms": {"cpu_b64": 2.5}},
            {"model": "final", "accuracy": 0.86, "latency_ms": {"cpu_b64": 2.0}},
            {"model": "tiny", "accuracy": 0.70, "latency_ms": {"cpu_b64": 0.5}},
            {"model": "gpu_only", "accuracy": 0.99, "latency_ms": {"cuda_b256": 0.1}}]
    got = pick_deployable(recs, "cpu_b64", 3.0)
    if got != "final":
        hint = ("a record without that latency key cannot be judged: skip it." if got == "gpu_only" else
                "the teacher is over the budget: filter first, then take the most accurate." if got == "teacher" else
                "among the records within the budget, take the highest accuracy, not the fastest." if got == "tiny" else
                "filter by latency_ms[key] <= budget_ms, then take the max by accuracy and return its 'model'.")
        fail(f"pick_deployable(records, 'cpu_b64', 3.0) returned {got!r}, expected 'final'.", hint)
    if pick_deployable(recs, "cpu_b64", 0.1) is not None:
        fail("with a 0.1 ms budget no model fits.", "return None when nothing is within the budget.")
    return True


# ----------------------------------------------------------------------------- numeric targets (00-06)

TARGET_SIZES = ("params", "nonzero", "macs", "trainable")


def _size_of(model, size: str, input_size) -> int:
    from .metrics import count_macs, count_nonzero_params, count_params

    if size == "params":
        return count_params(model)
    if size == "nonzero":
        return count_nonzero_params(model)
    if size == "macs":
        return count_macs(model, input_size)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def check_target(model, *, reference, size: str, max_size: float, accuracy_of, reference_accuracy: float,
                 max_drop: float, judge: str = "all", input_size=(3, 32, 32)) -> dict:
    """The numeric-target exercise of a chapter (MIT 6.5940 lab style): the student's trained ``model`` must be at
    most ``max_size`` times the ``reference``'s ``size`` ("params", "nonzero", "macs"; "trainable": parameters that
    require a gradient, as a share of ``model``'s own) and lose at most ``max_drop`` points of accuracy against
    ``reference_accuracy`` (a negative ``max_drop`` asks for a gain). ``accuracy_of(model) -> float`` is measured
    here, on the split the chapter chose settings on (validation), never on the test split.

    ``judge`` (profile setting ``exercise_judge``): "all" judges both targets (the cpu profile on CIFAR-10, where they
    were set); "size" the size only (the gpu profile, whose accuracies no GPU run has measured yet; a dry run, a few
    steps of training); "none" reports both and judges neither (the smoke profile, whose models are too small for the
    size budgets; any dataset but CIFAR-10, which the targets were not set for: ``start_session`` says so).
    Returns {"size_ratio", "accuracy", "drop_points"}; raises AssertionError with a hint when a target is missed."""
    if size not in TARGET_SIZES:
        raise ValueError(f"size: {size!r} is not allowed; use {', '.join(TARGET_SIZES)}")
    judged = judged_note(judge)
    was_training = model.training
    ratio = _size_of(model, size, input_size) / (_size_of(model, "params", input_size) if size == "trainable"
                                                  else _size_of(reference, size, input_size))
    accuracy = float(accuracy_of(model.eval()))
    model.train(was_training)
    drop = 100 * (reference_accuracy - accuracy)
    what = {"params": "parameters", "nonzero": "non-zero parameters", "macs": "MACs",
            "trainable": "parameters trained"}[size]
    print(f"size: {what} {ratio:.1%} of the reference (target <= {max_size:.1%}) | accuracy {accuracy:.2%} against "
          f"{reference_accuracy:.2%}: {-drop:+.2f} points (target >= {-max_drop:+.2f}) | {judged}")
    judge_targets(
        judge, ratio=ratio, max_ratio=max_size, drop=drop, max_drop=max_drop,
        size_failure=(f"the model has {ratio:.1%} of the reference's {what}; the target is at most {max_size:.1%}.",
                      "compress further (more sparsity, more channels or blocks removed, a narrower design), then "
                      "recover."),
        accuracy_failure=(f"the model is {-drop:+.2f} points against the reference; the target is at least "
                          f"{-max_drop:+.2f}.",
                          "spend the budget where it hurts least: the chapter's sensitivity or importance scores say "
                          "where; recover with the chapter's fine-tuning or KD."))
    return {"size_ratio": ratio, "accuracy": accuracy, "drop_points": drop}
