import pytest
import torch
from torch import nn

from coursekit.models import ResNetCifar
from coursekit.train import fit
from coursekit.transfer import (
    extract_features,
    freeze,
    l2sp_penalty,
    linear_probe,
    load_matching,
    replace_head,
    stage_param_groups,
    trainable_names,
    unfreeze,
)


def test_replace_head_keeps_the_backbone():
    m = ResNetCifar((1, 1, 1), 4, num_classes=10)
    before = {k: v.clone() for k, v in m.state_dict().items() if not k.startswith("fc.")}
    replace_head(m, 3)
    assert m.fc.out_features == 3 and m.fc.in_features == 16 and m.config["num_classes"] == 3
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items() if not k.startswith("fc."))
    assert m(torch.randn(2, 3, 16, 16)).shape == (2, 3)
    with pytest.raises(ValueError, match="num_classes"):
        replace_head(m, 1)
    with pytest.raises(ValueError, match="no nn.Linear head"):
        replace_head(nn.Sequential(nn.Conv2d(3, 3, 1)), 2)


def test_frozen_parameters_and_bn_statistics_do_not_change_in_training(toy_batches):
    torch.manual_seed(0)
    m = ResNetCifar((1, 1, 1), 8, num_classes=2)
    frozen = freeze(m, ["stem.*", "layer1.*", "layer2.*"])
    assert frozen and all(not n.startswith(("layer3", "fc")) for n in frozen)
    assert set(trainable_names(m)) == {n for n, _ in m.named_parameters() if n.startswith(("layer3", "fc"))}
    before = {k: v.clone() for k, v in m.state_dict().items()}
    fit(m, toy_batches(batch_size=16, shuffle=True), epochs=2, lr=0.1, amp="off", progress=False)
    after = m.state_dict()
    for k in before:
        if k.startswith(("stem", "layer1", "layer2")):
            assert torch.equal(before[k], after[k]), f"{k} changed although frozen"
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("layer3"))
    assert not m.layer1[0].bn1.training and m.layer3[0].bn1.training


def test_unfreeze_releases_parameters_and_bn():
    m = ResNetCifar((1, 1, 1), 4)
    freeze(m, "*")
    assert trainable_names(m) == []
    unfreeze(m, ["layer3.*", "fc.*"])
    m.train()
    m(torch.randn(2, 3, 16, 16))
    assert m.layer3[0].bn1.training and not m.stem[1].training
    with pytest.raises(ValueError, match="match no parameter"):
        freeze(m, "backbone.*")


def test_stage_param_groups_give_each_stage_its_learning_rate():
    m = ResNetCifar((1, 1, 1), 4)
    freeze(m, "stem.*")
    groups = stage_param_groups(m, {"layer*": 0.01, "fc": 0.1})
    lrs = {g["name"]: g["lr"] for g in groups}
    assert lrs == {"layer*": 0.01, "layer* (no decay)": 0.01, "fc": 0.1, "fc (no decay)": 0.1}
    n = sum(p.numel() for g in groups for p in g["params"])
    assert n == sum(p.numel() for p in m.parameters() if p.requires_grad)
    opt = torch.optim.SGD(groups, lr=1.0)
    assert sorted({g["lr"] for g in opt.param_groups}) == [0.01, 0.1]
    with pytest.raises(ValueError, match="no pattern matches"):
        stage_param_groups(m, {"fc": 0.1})


def test_l2sp_is_zero_at_the_pretrained_weights_and_matches_a_hand_computation():
    m = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
    ref = {k: v.clone() for k, v in m.state_dict().items() if k.startswith("0.")}
    assert l2sp_penalty(m, ref, 0.5).item() == 0.0
    with torch.no_grad():
        m[0].weight.add_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
        m[0].bias.add_(torch.tensor([3.0, 0.0]))
        m[1].weight.add_(10.0)  # not in the reference: not penalised
    assert l2sp_penalty(m, ref, 0.5).item() == pytest.approx(0.5 * 0.5 * (1 + 4 + 9))
    with pytest.raises(ValueError, match="no parameter"):
        l2sp_penalty(m, {"x": torch.zeros(1)}, 0.1)


def test_load_matching_refuses_names_the_model_lacks():
    src = ResNetCifar((1, 1, 1), 4, num_classes=5)
    dst = ResNetCifar((1, 1, 1), 4, num_classes=3)
    report = load_matching(dst, src.state_dict())
    assert torch.equal(dst.layer2[0].conv1.weight, src.layer2[0].conv1.weight)
    assert report["skipped"] == ["fc.weight", "fc.bias"]
    renamed = {f"backbone.{k}": v for k, v in src.state_dict().items()}
    with pytest.raises(ValueError, match="have no tensor of that name"):
        load_matching(dst, renamed)


def test_features_are_the_head_input_and_a_probe_learns_them(toy_batches):
    torch.manual_seed(0)
    m = ResNetCifar((1, 1, 1), 4, num_classes=2)
    feats, ys = extract_features(m, toy_batches(batch_size=16))
    assert feats.shape == (64, 16) and ys.shape == (64,)
    assert isinstance(m.fc, nn.Linear), "the head is put back"
    head = linear_probe(feats, ys, 2, epochs=200, lr=0.05)
    acc = (head(feats).argmax(1) == ys).float().mean().item()
    assert acc > 0.9
    m.fc = head
    m.eval()
    x, y = next(iter(toy_batches(batch_size=64)))
    assert torch.allclose(m(x), head(feats), atol=1e-4), "the probe applies to raw features"


def test_labels_per_class_is_checked():
    from coursekit.transfer import validate_labels_per_class

    validate_labels_per_class(5, {"a": 5, "b": 9})
    for bad in (0, -3, 2.5, True, None):
        with pytest.raises(ValueError, match="labels_per_class"):
            validate_labels_per_class(bad)
    with pytest.raises(ValueError, match=r"more than some classes have: \{'a': 5\}"):
        validate_labels_per_class(6, {"a": 5, "b": 9})
