import pytest
import torch
from torch import nn

from coursekit.checkpoints import load_checkpoint, outputs_match_in_fresh_process, save_checkpoint
from coursekit.data import Batches
from coursekit.metrics import count_macs
from coursekit.models import ResNetCifar, resnet18_cifar
from coursekit.trim import (
    ablation_importance,
    angular_distance,
    angular_importance,
    block_influence,
    blocks_to_drop,
    influence_importance,
    removable_blocks,
    remove_blocks,
    residual_blocks,
    validate_blocks_to_remove,
)


@pytest.fixture
def trim_model(randomize_bn):
    """Factory of a small ResNet (3, 2, 2 blocks, stem pooling) with trained-looking BatchNorms."""
    return lambda: randomize_bn(ResNetCifar((3, 2, 2), 8, stem_pool=True))


def test_removable_blocks_are_the_shape_preserving_ones():
    m = ResNetCifar((3, 2, 2), 8)
    assert residual_blocks(m) == ["layer1.0", "layer1.1", "layer1.2", "layer2.0", "layer2.1", "layer3.0", "layer3.1"]
    assert removable_blocks(m) == ["layer1.0", "layer1.1", "layer1.2", "layer2.1", "layer3.1"]
    tv = resnet18_cifar()
    assert removable_blocks(tv) == ["layer1.0", "layer1.1", "layer2.1", "layer3.1", "layer4.1"]


def test_removing_a_block_whose_branch_outputs_zeros_changes_nothing(cifar_images, trim_model):
    m = trim_model()
    with torch.no_grad():  # residual branch = bn2(conv2(...)) = 0 with gamma = beta = 0
        m.layer1[1].bn2.weight.zero_()
        m.layer1[1].bn2.bias.zero_()
        m.layer2[1].bn2.weight.zero_()
        m.layer2[1].bn2.bias.zero_()
    x = cifar_images()
    out = remove_blocks(m, ["layer1.1", "layer2.1"])
    # relu(0 + x) == x because x is already the output of a ReLU
    assert torch.allclose(out(x), m(x), atol=1e-5)
    assert isinstance(out.layer1[1], nn.Identity) and not isinstance(m.layer1[1], nn.Identity), "input model untouched"
    assert count_macs(out) < count_macs(m)


def test_downsampling_blocks_are_never_removed_silently(cifar_images, trim_model):
    m = trim_model()
    with pytest.raises(ValueError, match=r"\['layer2.0'\] change the tensor's shape"):
        remove_blocks(m, ["layer1.0", "layer2.0"])
    kept = remove_blocks(m, ["layer2.0"], downsampling="projection")
    assert isinstance(kept.layer2[0], nn.Sequential) and isinstance(kept.layer2[0][0], nn.Conv2d)
    assert kept(cifar_images()).shape == (3, 10)
    assert count_macs(kept) < count_macs(m)


@pytest.mark.parametrize("names,match", [(["layer9.0"], "no block"), (["layer1.0", "layer1.0"], "twice")])
def test_bad_block_names_are_refused(names, match, trim_model):
    with pytest.raises(ValueError, match=match):
        remove_blocks(trim_model(), names)


@pytest.mark.parametrize("k", [-1, 6, 1.5, True])
def test_bad_blocks_to_remove_is_refused(k, trim_model):
    with pytest.raises(ValueError, match="blocks_to_remove"):
        validate_blocks_to_remove(k, trim_model())


def test_blocks_to_drop_takes_the_least_important_allowed():
    scores = {"a": 0.3, "b": 0.1, "c": 0.2, "d": 0.0}
    assert blocks_to_drop(scores, 2, ["a", "b", "c"]) == ["b", "c"]
    with pytest.raises(ValueError):
        blocks_to_drop(scores, 4, ["a", "b", "c"])


def test_similarity_scores_by_hand():
    x = torch.zeros(1, 2, 1, 2)
    x[0, :, 0, 0] = torch.tensor([1.0, 0.0])
    x[0, :, 0, 1] = torch.tensor([0.0, 1.0])
    y = torch.zeros(1, 2, 1, 2)
    y[0, :, 0, 0] = torch.tensor([2.0, 0.0])  # same direction: cos 1, angle 0
    y[0, :, 0, 1] = torch.tensor([1.0, 0.0])  # perpendicular: cos 0, angle pi/2
    assert angular_distance(x, y) == pytest.approx(0.25)
    assert block_influence(x, y) == pytest.approx(0.5)
    assert angular_distance(x, x) == pytest.approx(0.0, abs=1e-3)


def test_importance_functions_share_one_signature(trim_model):
    torch.manual_seed(0)
    m = trim_model()
    x = torch.randint(0, 255, (32, 3, 32, 32), dtype=torch.uint8)
    y = torch.randint(0, 10, (32,))
    batches = Batches(x, y, torch.full((3,), 0.5), torch.full((3,), 0.25), 16)
    names = removable_blocks(m)
    for fn in (ablation_importance, angular_importance, influence_importance):
        scores = fn(m, batches, names)
        assert list(scores) == names and all(isinstance(v, float) for v in scores.values())
    with torch.no_grad():
        m.layer1[1].bn2.weight.zero_()
        m.layer1[1].bn2.bias.zero_()
    assert influence_importance(m, batches, names)["layer1.1"] == pytest.approx(0.0, abs=1e-5)
    assert ablation_importance(m, batches, names)["layer1.1"] == pytest.approx(0.0)


@pytest.mark.parametrize("projection", [False, True])
def test_trimmed_checkpoint_loads_in_a_fresh_process_with_identical_outputs(tmp_path, projection, cifar_images, trim_model):
    m = trim_model()
    trimmed = remove_blocks(m, ["layer1.1", "layer2.0"] if projection else ["layer1.1", "layer3.1"],
                            downsampling="projection" if projection else "error")
    save_checkpoint(tmp_path / "t.pt", trimmed, {"name": "resnet_cifar", **m.config})
    assert outputs_match_in_fresh_process(tmp_path / "t.pt", trimmed, cifar_images())
    loaded, _ = load_checkpoint(tmp_path / "t.pt")
    assert isinstance(loaded.layer1[1], nn.Identity)


def test_a_plain_stack_has_no_shortcuts_and_no_zero_init(cifar_images):
    m = ResNetCifar((2, 2, 2), 8, residual=False)
    assert all(len(b.shortcut) == 0 for b in m.modules() if hasattr(b, "shortcut"))
    assert all(bool((b.bn2.weight != 0).all()) for b in m.modules() if hasattr(b, "bn2"))
    assert m(cifar_images()).shape == (3, 10) and m.config["residual"] is False
