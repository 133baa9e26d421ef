import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from coursekit.distill import FeatureHint, kd_loss, kd_loss_fn, soft_targets, validate_teacher_student
from coursekit.models import ResNetCifar


def _reference_kd(s, t, y, T, alpha):
    """Straight from Hinton et al. 2015, via F.kl_div on log-probabilities and probabilities."""
    soft = F.kl_div(F.log_softmax(s / T, 1), F.softmax(t / T, 1), reduction="batchmean") * T * T
    return (1 - alpha) * F.cross_entropy(s, y) + alpha * soft


def test_kd_loss_matches_a_hand_computation_on_2x3_logits():
    s = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    t = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    y = torch.tensor([0, 1])
    T, alpha = 2.0, 0.5

    def softmax(row):
        e = [math.exp(v) for v in row]
        return [v / sum(e) for v in e]

    kl, ce = 0.0, 0.0
    for si, ti, yi in zip(s.tolist(), t.tolist(), y.tolist(), strict=True):
        ps, pt = softmax([v / T for v in si]), softmax([v / T for v in ti])
        kl += sum(q * math.log(q / p) for p, q in zip(ps, pt, strict=True))
        ce += -math.log(softmax(si)[yi])
    want = (1 - alpha) * ce / 2 + alpha * T * T * kl / 2
    assert kd_loss(s, t, y, T, alpha).item() == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("T,alpha", [(1.0, 0.5), (4.0, 0.9), (8.0, 1.0)])
def test_kd_loss_matches_the_kl_div_reference(T, alpha):
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(16, 10, generator=g), torch.randn(16, 10, generator=g) * 3
    y = torch.randint(0, 10, (16,), generator=g)
    assert torch.allclose(kd_loss(s, t, y, T, alpha), _reference_kd(s, t, y, T, alpha), atol=1e-6)


def test_alpha_zero_is_plain_cross_entropy_and_equal_logits_give_zero_soft_term():
    s, t, y = torch.randn(8, 5), torch.randn(8, 5), torch.randint(0, 5, (8,))
    assert torch.allclose(kd_loss(s, t, y, 4.0, 0.0), F.cross_entropy(s, y))
    assert kd_loss(s, s, y, 4.0, 1.0).item() == pytest.approx(0.0, abs=1e-6)


def test_t_squared_keeps_the_soft_gradient_scale():
    """Without T^2 the soft gradients shrink as 1/T^2; with it they stay of the same order."""
    g = torch.Generator().manual_seed(1)
    t = torch.randn(64, 10, generator=g)
    y = torch.randint(0, 10, (64,), generator=g)
    base = torch.randn(64, 10, generator=g)
    norms = {}
    for T in (1.0, 10.0):
        s = base.clone().requires_grad_(True)
        kd_loss(s, t, y, T, 1.0).backward()
        norms[T] = s.grad.norm().item()
    # for large T the soft gradient tends to (z_s - z_t) / (C N); the ratio stays near 1, far from 1/100
    assert 0.2 < norms[10.0] / norms[1.0] < 5


def test_gradients_never_reach_the_teacher():
    teacher, student = ResNetCifar((1, 1, 1), 8, 4), ResNetCifar((1, 1, 1), 4, 4)
    loss_fn = kd_loss_fn(teacher, temperature=4.0, alpha=0.9)
    x, y = torch.randn(4, 3, 16, 16), torch.randint(0, 4, (4,))
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student.train()
    loss, logits = loss_fn(student, x, y)
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for p in student.parameters() if p.requires_grad)
    assert not teacher.training, "the teacher stays in eval mode"
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items()), "BN statistics untouched"
    assert logits.shape == (4, 4)


@pytest.mark.parametrize("kwargs,match", [
    ({"temperature": 0}, "temperature: 0 is not allowed"),
    ({"temperature": -1.0}, "temperature"),
    ({"alpha": 1.5}, r"alpha: 1.5 is not allowed; use a number in \[0, 1\]"),
    ({"alpha": -0.1}, "alpha"),
])
def test_bad_temperature_and_alpha(kwargs, match):
    args = {"temperature": 4.0, "alpha": 0.5, **kwargs}
    with pytest.raises(ValueError, match=match):
        kd_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), **args)
    with pytest.raises(ValueError, match=match):
        kd_loss_fn(ResNetCifar((1, 1, 1), 4), **args)


def test_teacher_and_student_must_predict_the_same_classes():
    with pytest.raises(ValueError, match="same classes"):
        validate_teacher_student(ResNetCifar((1, 1, 1), 8, 10), ResNetCifar((1, 1, 1), 4, 5))
    with pytest.raises(ValueError, match="differ"):
        kd_loss(torch.zeros(2, 10), torch.zeros(2, 5), torch.zeros(2, dtype=torch.long))


def test_a_student_larger_than_the_teacher_warns():
    with pytest.warns(UserWarning, match="not fewer than the teacher"):
        validate_teacher_student(ResNetCifar((1, 1, 1), 4), ResNetCifar((1, 1, 1), 8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        validate_teacher_student(ResNetCifar((1, 1, 1), 8), ResNetCifar((1, 1, 1), 4))


def test_soft_targets_flatten_with_temperature():
    z = torch.tensor([[3.0, 1.0, 0.0]])
    p1, p8 = soft_targets(z, 1.0), soft_targets(z, 8.0)
    assert torch.allclose(p1.sum(), torch.tensor(1.0)) and p8[0, 0] < p1[0, 0] and p8[0, 2] > p1[0, 2]


def test_feature_hint_trains_an_adapter_towards_the_teacher_features():
    torch.manual_seed(0)
    teacher, student = ResNetCifar((1, 1, 1), 8, 3).eval(), ResNetCifar((1, 1, 1), 4, 3)
    hint = FeatureHint(student, teacher, "layer2", "layer2", input_size=(3, 16, 16))
    assert hint.adapter.in_channels == 8 and hint.adapter.out_channels == 16
    loss_fn = kd_loss_fn(teacher, 4.0, 0.5, hint=hint)
    opt = torch.optim.SGD(list(student.parameters()) + list(hint.parameters()), lr=0.05)
    x, y = torch.randn(8, 3, 16, 16), torch.randint(0, 3, (8,))
    losses = []
    for _ in range(5):
        loss, _ = loss_fn(student, x, y)
        hint_loss = hint.loss().item()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(hint_loss)
    assert losses[-1] < losses[0]
    with pytest.raises(ValueError, match="student_layer: no module 'layer9'"):
        FeatureHint(student, teacher, "layer9", "layer2")


def test_kd_loss_fn_leaves_the_teacher_trainable_for_later_copies():
    """Chapters 04-06 prune copies of the teacher after distilling from it: those copies must train."""
    from coursekit.distill import kd_loss_fn
    from coursekit.models import ResNetCifar

    teacher = ResNetCifar((1, 1, 1), 8)
    kd_loss_fn(teacher, 4.0, 0.9)
    assert all(p.requires_grad for p in teacher.parameters())


def test_train_student_alone_and_distilled_differ_only_in_the_loss(toy_batches):
    """train_student (02, 06): the same seed builds the same student and sees the same batches; with a teacher the
    loss is KD, so the two students end apart; a teacher of another input size is refused before any training."""
    from coursekit.distill import train_student

    spec = {"name": "resnet_cifar", "blocks": [1, 1, 1], "width": 4, "num_classes": 2}
    teacher = ResNetCifar((1, 1, 1), 8, num_classes=2).eval()
    common = {"epochs": 1, "lr": 0.05, "seed": 3, "input_size": (3, 16, 16), "amp": "off", "channels_last": False}
    alone, h_alone = train_student(spec, toy_batches(n=32, seed=0, batch_size=16), **common)
    again, _ = train_student(spec, toy_batches(n=32, seed=0, batch_size=16), **common)
    kd, h_kd = train_student(spec, toy_batches(n=32, seed=0, batch_size=16), teacher=teacher, temperature=4.0, alpha=0.9,
                             **common)
    assert not alone.training and len(h_alone["train_loss"]) == len(h_kd["train_loss"]) == 1
    assert all(torch.equal(a, b) for a, b in zip(alone.state_dict().values(), again.state_dict().values(), strict=True))
    assert not torch.equal(alone.fc.weight, kd.fc.weight), "the teacher changed the loss, so the weights"
    with pytest.raises(ValueError, match="classes"):
        train_student(spec, toy_batches(n=32, seed=0, batch_size=16), teacher=ResNetCifar((1, 1, 1), 8, num_classes=5),
                      **common)


def test_uniform_layer_map_meets_the_last_layers_and_passes_the_exercise_check():
    from coursekit import checks
    from coursekit.textdistill import uniform_layer_map

    assert uniform_layer_map(3, 6) == {1: 2, 2: 4, 3: 6} and uniform_layer_map(4, 12)[4] == 12
    assert checks.check_layer_map(uniform_layer_map)
    with pytest.raises(ValueError, match="student_layers: 7 is not allowed; use an integer from 1 to 6"):
        uniform_layer_map(7, 6)
