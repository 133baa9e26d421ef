import pytest
import torch

from coursekit.models import BasicBlock, ResNetCifar, build_model, resnet18_cifar


@pytest.mark.parametrize("blocks,width,pool", [((1, 1, 1), 4, False), ((2, 1, 3), 8, True), ((3, 3, 3), 16, False)])
def test_resnet_cifar_shapes_and_depth(blocks, width, pool):
    m = ResNetCifar(blocks, width, num_classes=7, stem_pool=pool).eval()
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 7)
    assert sum(isinstance(b, BasicBlock) for b in m.modules()) == sum(blocks)
    assert m.layer3[0].conv1.out_channels == 4 * width
    assert [b.downsamples for b in m.layer2] == [True] + [False] * (blocks[1] - 1)


def test_resnet_cifar_zero_init_makes_blocks_identity_like():
    m = ResNetCifar((1, 1, 1), 8).eval()
    block = m.layer1[0]
    x = torch.rand(1, 8, 8, 8)  # non-negative, as after a ReLU
    assert torch.allclose(block(x), x), "zero-initialised bn2 makes a fresh block the identity on ReLU inputs"


def test_build_model_by_name_and_bad_names():
    assert isinstance(build_model("resnet_cifar", num_classes=3, blocks=(1, 1, 1), width=4), ResNetCifar)
    with pytest.raises(ValueError, match="model: unknown name 'vgg'.*resnet_cifar"):
        build_model("vgg")
    with pytest.raises(ValueError, match="blocks"):
        ResNetCifar((1, 1), 4)


def test_resnet18_cifar_random_init_is_adapted_to_32x32():
    m = resnet18_cifar(num_classes=10).eval()
    assert m.conv1.kernel_size == (3, 3) and m.conv1.stride == (1, 1)
    assert isinstance(m.maxpool, torch.nn.Identity)
    assert m(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_resnet18_imagenet_weights_load_offline_from_torchvision_cache(tmp_path, monkeypatch):
    """Plant a state dict where torchvision's weights API looks, so no download happens."""
    from torchvision.models import ResNet18_Weights, resnet18

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    planted = resnet18(num_classes=1000).state_dict()
    fname = ResNet18_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[-1]
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(planted, tmp_path / "hub" / "checkpoints" / fname)

    m = resnet18_cifar(num_classes=5, weights="IMAGENET1K_V1")
    assert torch.equal(m.layer4[1].conv2.weight, planted["layer4.1.conv2.weight"]), "backbone weights come from the cache"
    assert m.fc.out_features == 5, "the 1000-class ImageNet head is replaced"
    assert m.conv1.weight.shape == (64, 3, 3, 3)
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 5)


def test_model_from_spec_applies_changes_and_needs_a_name():
    from coursekit.models import model_from_spec

    spec = {"name": "resnet_cifar", "blocks": [1, 1, 1], "width": 4}
    m = model_from_spec(spec, width=8, num_classes=3)
    assert m.config["width"] == 8 and m.fc.out_features == 3 and spec["width"] == 4
    with pytest.raises(ValueError, match="no 'name'"):
        model_from_spec({"width": 4})


def test_resnet_anatomy_is_the_same_for_coursekit_and_torchvision_blocks():
    from torchvision.models import resnet18

    from coursekit.models import block_changes_shape, is_residual_block, model_from_spec, projection_shortcut, stem_conv_bn

    ours = model_from_spec({"name": "resnet_cifar", "blocks": [1, 1, 1], "width": 8})
    tv = resnet18(weights=None)
    for model, first, down in ((ours, "layer1.0", "layer2.0"), (tv, "layer1.0", "layer2.0")):
        a, b = model.get_submodule(first), model.get_submodule(down)
        assert is_residual_block(a) and is_residual_block(b) and not is_residual_block(model)
        assert not block_changes_shape(a) and block_changes_shape(b)
        assert projection_shortcut(a) is None and isinstance(projection_shortcut(b)[0], torch.nn.Conv2d)
        conv, bn = stem_conv_bn(model)
        assert isinstance(conv, torch.nn.Conv2d) and bn.num_features == conv.out_channels


def test_reinitialized_keeps_a_pruned_architecture_and_draws_every_weight_anew():
    """Liu et al. 2019's scratch control: same shapes as the pruned and trimmed model, none of its values; the
    builder's own init (residual BN zeroed), reproducible from the seed, and the original left untouched."""
    from coursekit import prune as ckp
    from coursekit import trim
    from coursekit.models import model_from_spec, reinitialized

    torch.manual_seed(0)
    model = model_from_spec({"name": "resnet_cifar", "blocks": [2, 1, 1], "width": 8})
    for p in model.parameters():  # stand-in for training: every value moves away from the init
        p.data.add_(torch.randn_like(p))
    small = trim.remove_blocks(ckp.prune_channels(model, 0.5, scope="all"), ["layer1.1"])
    before = {k: v.clone() for k, v in small.state_dict().items()}
    fresh = reinitialized(small, seed=3)
    assert {k: v.shape for k, v in fresh.state_dict().items()} == {k: v.shape for k, v in before.items()}
    assert all(torch.equal(v, small.state_dict()[k]) for k, v in before.items()), "the original is untouched"
    params = dict(small.named_parameters())
    assert all(not torch.equal(p, params[k]) for k, p in fresh.named_parameters()), "every parameter drawn anew"
    residual_bn2 = [m.bn2.weight for m in fresh.modules() if hasattr(m, "bn2")]
    assert residual_bn2 and all(torch.count_nonzero(w) == 0 for w in residual_bn2)
    again = reinitialized(small, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), again.state_dict().values(), strict=True))
