import pytest

from coursekit import checks


@pytest.fixture(autouse=True)
def _fresh_hint_ladders():
    """Each test starts every hint ladder at its first step (a kernel keeps them for the student's session)."""
    checks.reset_hints()
    yield
    checks.reset_hints()


def test_checks_pass_on_right_answers():
    assert checks.check_conv_params(lambda ci, co, k, bias: co * ci * k * k + (co if bias else 0))
    assert checks.check_conv_macs(lambda ci, co, k, h, w: co * h * w * ci * k * k)
    assert checks.check_accuracy(lambda logits, y: (logits.argmax(1) == y).float().mean().item())
    assert checks.check_ideal_speedup(lambda big, small: big / small)


@pytest.mark.parametrize("check,wrong", [
    (checks.check_conv_params, lambda ci, co, k, bias: co * ci * k * k),  # forgets the bias
    (checks.check_conv_macs, lambda ci, co, k, h, w: co * h * w * k * k),  # forgets c_in
    (checks.check_accuracy, lambda logits, y: (logits.argmin(1) == y).float().mean().item()),
    (checks.check_ideal_speedup, lambda big, small: small / big),
])
def test_checks_fail_with_a_hint_on_wrong_answers(check, wrong):
    with pytest.raises(AssertionError, match=r"Hint( \(step 1 of \d\))?:"):
        check(wrong)


def test_hints_come_in_steps_thinking_first_then_the_formula():
    """The same mistake twice: first what to think about, then the formula; a third try keeps the last step."""
    wrong = lambda logits, y: (logits.argmin(1) == y).float().mean().item()  # noqa: E731
    with pytest.raises(AssertionError, match=r"Hint \(step 1 of 2\): the predicted class of a row.*try again") as first:
        checks.check_accuracy(wrong)
    assert "(1/N)" not in str(first.value)
    for _ in range(2):
        with pytest.raises(AssertionError, match=r"Hint \(step 2 of 2\): accuracy = \(1/N\)") as later:
            checks.check_accuracy(wrong)
        assert "try again" not in str(later.value)
    checks.reset_hints()
    with pytest.raises(AssertionError, match=r"step 1 of 2"):
        checks.check_accuracy(wrong)


def test_check_accuracy_catches_a_constant_denominator():
    with pytest.raises(AssertionError, match="Hint"):
        checks.check_accuracy(lambda logits, y: (logits.argmax(1) == y).float().sum().item() / 4)


@pytest.mark.filterwarnings("ignore:reduction")
def test_distillation_checks_pass_on_right_answers_and_fail_on_classic_mistakes():
    import torch.nn.functional as F

    def kl(s, t, T):
        return F.kl_div(F.log_softmax(s / T, 1), F.softmax(t / T, 1), reduction="batchmean") * T * T

    assert checks.check_soften(lambda z, T: F.softmax(z / T, -1))
    assert checks.check_kl_term(kl)
    assert checks.check_distill_loss(lambda s, t, y, T, a: (1 - a) * F.cross_entropy(s, y) + a * kl(s, t, T))
    with pytest.raises(AssertionError, match="before the exponential"):
        checks.check_soften(lambda z, T: F.softmax(z * T, -1))  # multiplies by T instead of dividing
    naive = lambda z, T: (z / T).exp() / (z / T).exp().sum(-1, keepdim=True)  # noqa: E731  (exp(1000) = inf)
    with pytest.raises(AssertionError, match="overflows to inf: the logits must be made smaller"):
        checks.check_soften(naive)
    with pytest.raises(AssertionError, match="subtract each row's maximum"):
        checks.check_soften(naive)
    with pytest.raises(AssertionError, match="log_softmax"):
        checks.check_kl_term(lambda s, t, T: F.kl_div(F.softmax(s / T, 1), F.softmax(t / T, 1), reduction="batchmean") * T * T)
    with pytest.raises(AssertionError, match=r"T\^2"):
        checks.check_kl_term(lambda s, t, T: kl(s, t, T) / (T * T))
    with pytest.raises(AssertionError, match="batchmean"):
        checks.check_kl_term(lambda s, t, T: F.kl_div(F.log_softmax(s / T, 1), F.softmax(t / T, 1), reduction="mean") * T * T)
    with pytest.raises(AssertionError, match="Hint"):
        checks.check_distill_loss(lambda s, t, y, T, a: a * F.cross_entropy(s, y) + (1 - a) * kl(s, t, T))


def test_transfer_checks_pass_on_right_answers_and_fail_on_mistakes():
    from torch import nn

    from coursekit.transfer import freeze

    def good_head(m, n):
        m.fc = nn.Linear(m.fc.in_features, n)
        return m

    def l2sp(m, ref, s):
        return s / 2 * sum((p - ref[k]).pow(2).sum() for k, p in m.named_parameters() if k in ref)

    assert checks.check_replace_head(good_head)
    assert checks.check_l2sp(l2sp)
    assert checks.check_freeze_all_but_last_stage(lambda m: freeze(m, ["stem.*", "layer1.*", "layer2.*"]))
    with pytest.raises(AssertionError, match="in_features"):
        checks.check_replace_head(lambda m, n: setattr(m, "fc", nn.Linear(10, n)) or m)
    with pytest.raises(AssertionError, match="Hint"):
        checks.check_l2sp(lambda m, ref, s: s / 2 * sum(p.pow(2).sum() for p in m.parameters()))
    with pytest.raises(AssertionError, match="still in train mode"):
        checks.check_freeze_all_but_last_stage(
            lambda m: [p.requires_grad_(False) for n, p in m.named_parameters() if not n.startswith(("layer3", "fc"))])


def test_pruning_checks_pass_on_the_library_and_fail_on_classic_mistakes():
    import torch
    from torch import nn

    from coursekit import prune

    assert checks.check_magnitude_mask(prune.magnitude_mask)
    assert checks.check_global_threshold(prune.global_threshold)
    assert checks.check_agp_sparsity(prune.agp_sparsity)
    assert checks.check_l1_filter_importance(prune.l1_filter_importance)
    assert checks.check_prune_conv_bn(prune.prune_conv_bn)
    assert checks.check_prune_in_channels(prune.prune_in_channels)

    def signed_mask(w, s):  # ranks by signed value, not magnitude
        k = round(s * w.numel())
        m = torch.ones(w.numel())
        m[torch.topk(w.flatten(), k, largest=False).indices] = 0
        return m.view(w.shape)

    with pytest.raises(AssertionError, match="absolute value"):
        checks.check_magnitude_mask(signed_mask)
    with pytest.raises(AssertionError, match="per-layer"):
        checks.check_global_threshold(lambda ws, s: min(float(prune.global_threshold([w], s)) for w in ws))
    with pytest.raises(AssertionError, match="clamp"):
        checks.check_agp_sparsity(lambda t, f, t0, t1: f * (1 - (1 - (t - t0) / (t1 - t0)) ** 3))
    with pytest.raises(AssertionError, match="cancel"):
        checks.check_l1_filter_importance(lambda conv, bn: conv.weight.flatten(1).sum(1))

    def forgets_stats(conv, bn, keep):
        c, b = prune.prune_conv_bn(conv, bn, keep)
        b.running_mean.zero_(), b.running_var.fill_(1)
        return c, b

    with pytest.raises(AssertionError, match="running_mean"):
        checks.check_prune_conv_bn(forgets_stats)

    def wrong_dim(conv, keep):
        new = nn.Conv2d(len(keep), conv.out_channels, conv.kernel_size, padding=conv.padding)
        with torch.no_grad():
            new.weight.copy_(conv.weight[:, :len(keep)])
            new.bias.copy_(conv.bias)
        return new

    with pytest.raises(AssertionError, match="dimension 1"):
        checks.check_prune_in_channels(wrong_dim)


def test_trimming_checks_pass_on_the_library_and_fail_on_classic_mistakes():
    from torch import nn

    from coursekit import trim

    assert checks.check_angular_distance(trim.angular_distance)
    assert checks.check_blocks_to_drop(trim.blocks_to_drop)

    def set_identity(model, name):
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, nn.Identity())
        return model

    assert checks.check_replace_with_identity(set_identity)
    with pytest.raises(AssertionError, match="divide the angle by pi"):
        checks.check_angular_distance(lambda a, b: trim.angular_distance(a, b) * 3.141592653589793)
    with pytest.raises(AssertionError, match="LEAST"):
        checks.check_blocks_to_drop(lambda s, k, allowed: sorted(allowed, key=lambda n: -s[n])[:k])
    with pytest.raises(AssertionError, match="not allowed"):
        checks.check_blocks_to_drop(lambda s, k, allowed: sorted(s, key=lambda n: s[n])[:k])
    with pytest.raises(AssertionError, match="Identity"):
        checks.check_replace_with_identity(lambda model, name: model)


def test_pipeline_checks_pass_on_correct_answers_and_fail_on_classic_mistakes():
    from coursekit.plots import pareto_front

    assert checks.check_compound_ratio(lambda sizes: sizes[0] / sizes[-1])
    assert checks.check_pareto_front(pareto_front)

    def pick(records, key, budget):
        ok = [r for r in records if key in r["latency_ms"] and r["latency_ms"][key] <= budget]
        return max(ok, key=lambda r: r["accuracy"])["model"] if ok else None

    assert checks.check_pick_deployable(pick)
    with pytest.raises(AssertionError, match="multiply"):
        checks.check_compound_ratio(lambda sizes: sum(a / b for a, b in zip(sizes[:-1], sizes[1:], strict=True)))
    with pytest.raises(AssertionError, match="dominated"):
        checks.check_pareto_front(lambda pts: sorted(range(len(pts)), key=lambda i: pts[i][0]))
    with pytest.raises(AssertionError, match="not the fastest"):
        checks.check_pick_deployable(lambda recs, key, budget: "tiny")
    with pytest.raises(AssertionError, match="skip it"):
        checks.check_pick_deployable(lambda recs, key, budget: max(recs, key=lambda r: r["accuracy"])["model"])


def test_check_target_judges_size_and_accuracy_and_names_what_missed(capsys):
    from torch import nn

    big, small = nn.Sequential(nn.Linear(10, 10), nn.Linear(10, 10)), nn.Linear(10, 10)
    ok = checks.check_target(small, reference=big, size="params", max_size=0.5, accuracy_of=lambda m: 0.80,
                             reference_accuracy=0.81, max_drop=1.5)
    assert abs(ok["size_ratio"] - 0.5) < 1e-12 and abs(ok["drop_points"] - 1.0) < 1e-9
    assert "target <= 50.0%" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="at most 40.0%"):
        checks.check_target(small, reference=big, size="params", max_size=0.4, accuracy_of=lambda m: 0.9,
                            reference_accuracy=0.8, max_drop=1.0)
    with pytest.raises(AssertionError, match="-4.00 points.*at least -1.00"):  # missed by more than the 2-point spread
        checks.check_target(small, reference=big, size="params", max_size=0.5, accuracy_of=lambda m: 0.76,
                            reference_accuracy=0.80, max_drop=1.0)
    # a negative max_drop asks for a gain; judge="size" (a dry run) judges the size only, "none" (smoke) nothing
    with pytest.raises(AssertionError, match="at least \\+3.00"):
        checks.check_target(small, reference=big, size="params", max_size=0.5, accuracy_of=lambda m: 0.79,
                            reference_accuracy=0.80, max_drop=-3.0)
    assert checks.check_target(small, reference=big, size="params", max_size=0.5, accuracy_of=lambda m: 0.1,
                               reference_accuracy=0.8, max_drop=1.0, judge="size")["accuracy"] == 0.1
    with pytest.raises(AssertionError, match="at most 40.0%"):
        checks.check_target(small, reference=big, size="params", max_size=0.4, accuracy_of=lambda m: 0.1,
                            reference_accuracy=0.8, max_drop=1.0, judge="size")
    assert checks.check_target(small, reference=big, size="params", max_size=0.1, accuracy_of=lambda m: 0.1,
                               reference_accuracy=0.8, max_drop=1.0, judge="none")["size_ratio"] == 0.5
    assert "reported, not judged: the targets were set on the cpu profile" in capsys.readouterr().out
    with pytest.raises(ValueError, match="judge: 'some' is not allowed"):
        checks.check_target(small, reference=big, size="params", max_size=0.5, accuracy_of=lambda m: 0.1,
                            reference_accuracy=0.8, max_drop=1.0, judge="some")


def test_check_target_counts_what_it_is_told_to():
    import torch
    from torch import nn

    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8))
    for p in net[0].parameters():
        p.requires_grad_(False)
    share = checks.check_target(net, reference=net, size="trainable", max_size=0.1, accuracy_of=lambda m: 0.5,
                                reference_accuracy=0.5, max_drop=0.0)["size_ratio"]
    assert share == 16 / (8 * 27 + 8 + 16)  # BN weight and bias of 8 channels over every parameter
    pruned = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8))
    with torch.no_grad():
        pruned[0].weight[:4] = 0
    nz = checks.check_target(pruned, reference=net, size="nonzero", max_size=1.0, accuracy_of=lambda m: 0.5,
                             reference_accuracy=0.5, max_drop=0.0)["size_ratio"]
    assert abs(nz - (8 * 27 + 8 + 8 - 4 * 27) / (8 * 27 + 8 + 8)) < 1e-12  # BN biases start at 0: not non-zero
    half = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4))
    macs = checks.check_target(half, reference=net, size="macs", max_size=0.5, accuracy_of=lambda m: 0.5,
                               reference_accuracy=0.5, max_drop=0.0, input_size=(3, 8, 8))["size_ratio"]
    assert 0.45 < macs <= 0.5
    with pytest.raises(ValueError, match="size: 'bytes' is not allowed"):
        checks.check_target(net, reference=net, size="bytes", max_size=1, accuracy_of=lambda m: 0.5,
                            reference_accuracy=0.5, max_drop=0.0)


def test_part2_transfer_and_distillation_checks_pass_on_right_answers_and_fail_on_classic_mistakes():
    """07's and 08's checkers, each on its right answer and on the classic mistake its hint names."""
    import torch.nn.functional as F

    def max_pool(h, mask):
        return h.masked_fill(~mask.bool().unsqueeze(-1), float("-inf")).amax(1)

    assert checks.check_max_pool(max_pool)
    with pytest.raises(AssertionError, match="a padding 0 beats negative values"):
        checks.check_max_pool(lambda h, mask: (h * mask.unsqueeze(-1)).amax(1))  # padding zeros win the max
    assert checks.check_lora_params(lambda d, k, r: r * (d + k))
    with pytest.raises(AssertionError, match="B @ A"):
        checks.check_lora_params(lambda d, k, r: d * k)  # the full matrix, not the adapter
    assert checks.check_embedding_share(
        lambda m: m.encoder.embeddings.word_embeddings.weight.numel() / sum(p.numel() for p in m.parameters()))
    with pytest.raises(AssertionError, match="position and token-type embeddings are not part of it"):
        checks.check_embedding_share(  # every embedding table counted
            lambda m: sum(p.numel() for p in m.encoder.embeddings.parameters()) / sum(p.numel() for p in m.parameters()))
    assert checks.check_student_layers(lambda n, k: [i * n // k for i in range(k)])
    with pytest.raises(AssertionError, match="spread evenly over the teacher"):
        checks.check_student_layers(lambda n, k: list(range(k)))  # the first k layers
    assert checks.check_layer_map(lambda s, t: {k: k * t // s for k in range(1, s + 1)})
    with pytest.raises(AssertionError, match="last student layer always meets the teacher's last"):
        checks.check_layer_map(lambda s, t: {k: k for k in range(1, s + 1)})  # student k to teacher k

    def hidden_loss(s, t, mask):
        m = mask.bool()
        return (1 - F.cosine_similarity(s[m], t[m], dim=-1)).mean()

    assert checks.check_hidden_loss(hidden_loss)
    with pytest.raises(AssertionError, match="padding positions were counted"):
        checks.check_hidden_loss(lambda s, t, mask: (1 - F.cosine_similarity(s, t, dim=-1)).mean())
    with pytest.raises(AssertionError, match="Hint"):
        checks.check_hidden_loss(lambda s, t, mask: ((s - t) ** 2)[mask.bool()].mean())  # squared error, not cosine


def test_judge_targets_judges_size_unless_none_and_accuracy_only_under_all():
    from coursekit.hints import judge_targets, reset_hints

    reset_hints()
    size_miss = dict(ratio=0.5, max_ratio=0.25, drop=0.0, max_drop=1.0)
    acc_miss = dict(ratio=0.2, max_ratio=0.25, drop=3.5, max_drop=1.0)  # beyond the 2-point tolerance
    fails = (("size missed.", "cut more"), ("accuracy missed.", "recover"))
    for judge in ("none", "size", "all"):
        for case in (size_miss, acc_miss):
            expect = (judge != "none" and case is size_miss) or (judge == "all" and case is acc_miss)
            if expect:
                with pytest.raises(AssertionError, match="size missed" if case is size_miss else "accuracy missed"):
                    judge_targets(judge, **case, size_failure=fails[0], accuracy_failure=fails[1])
            else:
                judge_targets(judge, **case, size_failure=fails[0], accuracy_failure=fails[1])
    judge_targets("all", ratio=0.25, max_ratio=0.25, drop=1.0, max_drop=1.0, size_failure=fails[0],
                  accuracy_failure=fails[1])  # a target met exactly passes


def test_an_accuracy_miss_within_the_measured_spread_between_cpus_is_reported_not_failed(capsys):
    from coursekit.hints import ACCURACY_TOLERANCE_POINTS, judge_targets

    fails = (("size missed.", "cut more"), ("accuracy missed.", "recover"))
    judge_targets("all", ratio=0.2, max_ratio=0.25, drop=5.4, max_drop=5.0, size_failure=fails[0],
                  accuracy_failure=fails[1])  # 00's design on the Intel Xeon: 0.40 points short
    assert "missed by 0.40 points, within the 2.00 points" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="accuracy missed"):
        judge_targets("all", ratio=0.2, max_ratio=0.25, drop=5.0 + ACCURACY_TOLERANCE_POINTS + 0.01, max_drop=5.0,
                      size_failure=fails[0], accuracy_failure=fails[1])
    with pytest.raises(AssertionError, match="accuracy missed"):  # a check in other units passes no tolerance
        judge_targets("all", ratio=0.2, max_ratio=0.25, drop=2.31, max_drop=2.30, size_failure=fails[0],
                      accuracy_failure=fails[1], tolerance=0.0)
    judge_targets("all", ratio=0.2, max_ratio=0.25, drop=4.0, max_drop=5.0, size_failure=fails[0],
                  accuracy_failure=fails[1])
    assert capsys.readouterr().out == "", "a target met prints nothing more"
