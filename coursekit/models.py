"""Models used throughout the course.

* ``ResNetCifar`` -- the CIFAR-style residual network family (He et al. 2016,
  "Deep Residual Learning", section 4.2): a 3x3 stem, three stages of
  BasicBlocks with widths ``(w, 2w, 4w)`` at 32x32, 16x16 and 8x8 (16x16, 8x8 and 4x4 with ``stem_pool``, as the
  cpu profile's models are built), global average pooling and a linear classifier. Depth and width are
  configurable.
* ``resnet18_cifar`` -- torchvision's ResNet-18 adapted to 32x32 inputs (3x3
  stem with stride 1, no max-pool), optionally initialised from torchvision's
  ImageNet weights through the weights API.
* ``build_model`` -- one entry point by name, used by configs and checkpoints.

Introduced in notebooks/00_baseline.ipynb.
"""

from __future__ import annotations

import copy
import inspect

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BasicBlock", "ResNetCifar", "init_weights", "reinitialized", "resnet18_cifar", "build_model",
           "model_from_spec", "check_spec", "MODEL_NAMES",
           "MODEL_BUILDERS", "is_residual_block", "block_changes_shape",
           "projection_shortcut", "stem_conv_bn", "set_module"]


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 projection) shortcut.

    x: (N, in_ch, H, W) -> (N, out_ch, H/stride, W/stride).
    ``conv1``/``bn1`` hold the block's inner channels, which structured pruning
    may shrink; ``conv2``/``bn2`` write to the residual stream.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, mid_ch: int | None = None, residual: bool = True):
        super().__init__()
        mid_ch = out_ch if mid_ch is None else mid_ch
        self.residual = residual
        self.conv1 = nn.Conv2d(in_ch, mid_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid_ch)
        self.conv2 = nn.Conv2d(mid_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut = nn.Sequential()
        if residual and (stride != 1 or in_ch != out_ch):
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    @property
    def downsamples(self) -> bool:
        """True when the block changes the tensor's shape (stride or channel count)."""
        return self.conv1.stride != (1, 1) or self.conv1.in_channels != self.conv2.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x)) if self.residual else F.relu(out)


class ResNetCifar(nn.Module):
    """CIFAR ResNet: stem -> stage1 (w) -> stage2 (2w, /2) -> stage3 (4w, /2) -> pool -> fc.

    Args:
        blocks: BasicBlocks per stage, e.g. (3, 3, 3) is ResNet-20.
        width: channels of the first stage ``w``; the stages have (w, 2w, 4w).
        num_classes: size of the classifier.
        residual: False drops every shortcut: the same layers as a plain stack (chapter 05's contrast).
    Input (N, 3, 32, 32) -> logits (N, num_classes). Any input size works
    thanks to the global average pool.
    """

    def __init__(self, blocks=(3, 3, 3), width: int = 16, num_classes: int = 10, stem_pool: bool = False,
                 residual: bool = True):
        super().__init__()
        if len(blocks) != 3 or min(blocks) < 1:
            raise ValueError(f"blocks must be three positive counts, got {blocks!r}")
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width!r}")
        self.config = {"blocks": list(blocks), "width": int(width), "num_classes": int(num_classes), "stem_pool": bool(stem_pool)}
        if not residual:
            self.config["residual"] = False
        stem = [nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        if stem_pool:  # 32x32 -> 16x16 before the stages: 4x fewer MACs, airbench-style
            stem.append(nn.MaxPool2d(2))
        self.stem = nn.Sequential(*stem)
        stages, in_ch = [], width
        for i, n in enumerate(blocks):
            out_ch = width * 2**i
            layers = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                layers.append(BasicBlock(in_ch, out_ch, stride, residual=residual))
                in_ch = out_ch
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)  # (N, w, 32, 32); (N, w, 16, 16) with stem_pool
        x = self.layer1(x)  # (N, w, 32, 32); 16x16 with stem_pool
        x = self.layer2(x)  # (N, 2w, 16, 16); 8x8 with stem_pool
        x = self.layer3(x)  # (N, 4w, 8, 8); 4x4 with stem_pool
        return self.fc(torch.flatten(self.pool(x), 1))  # (N, classes)


def init_weights(model: nn.Module) -> nn.Module:
    """The course's ResNet initialisation, in place: Kaiming-normal convolutions (fan_out, He et al. 2015), and the
    last BN of each residual branch zeroed (Goyal et al. 2017), so every block starts as the identity, which trains
    faster (a plain stack, ``residual=False``, keeps its BN: it would start as all zeros). Returns ``model``."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    for m in model.modules():
        if isinstance(m, BasicBlock) and m.residual:
            nn.init.zeros_(m.bn2.weight)
    return model


def reinitialized(model: nn.Module, seed: int) -> nn.Module:
    """A copy of ``model`` with every weight drawn anew with ``seed``: the same architecture (a pruned or trimmed one
    too), none of its learned values. Each layer's own ``reset_parameters`` (BN statistics included), then
    ``init_weights``. This is the scratch control of Liu et al. 2019, *Rethinking the Value of Network Pruning*."""
    fresh = copy.deepcopy(model)
    torch.manual_seed(seed)
    for m in fresh.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
        if hasattr(m, "reset_running_stats"):
            m.reset_running_stats()
    return init_weights(fresh)


def resnet18_cifar(num_classes: int = 10, weights: str | None = None) -> nn.Module:
    """torchvision's ResNet-18 adapted to 32x32 images.

    The 7x7 stride-2 stem and the max-pool would shrink a 32x32 image to 8x8
    before the first stage; they are replaced by a 3x3 stride-1 conv and an
    identity. ``weights`` is None (random init) or a torchvision weights name
    such as "IMAGENET1K_V1": the ImageNet weights are loaded (downloaded into
    torchvision's cache when absent), the stem's 7x7 kernel is resized to 3x3 and
    the 1000-class head replaced by a new ``num_classes`` one.
    """
    from torchvision.models import ResNet18_Weights, resnet18

    model = resnet18(weights=ResNet18_Weights[weights] if weights else None)
    old = model.conv1.weight.detach()
    model.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    if weights:
        with torch.no_grad():  # keep the pretrained filters' pattern, at 3x3
            model.conv1.weight.copy_(F.interpolate(old, size=(3, 3), mode="bilinear", align_corners=False))
    model.maxpool = nn.Identity()
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    model.config = {"num_classes": num_classes, "weights": weights}
    return model


MODEL_NAMES = ("resnet_cifar", "resnet18_cifar")
MODEL_BUILDERS = {"resnet_cifar": ResNetCifar, "resnet18_cifar": resnet18_cifar}


def check_spec(key: str, spec: dict) -> None:
    """Refuse a model spec (the setting ``key``) that names no known builder or gives an argument its builder does
    not take, without building it."""
    if not isinstance(spec, dict) or spec.get("name") not in MODEL_BUILDERS:
        raise ValueError(f"{key}: {spec!r} is not allowed; use a dict with 'name' one of {', '.join(MODEL_BUILDERS)}")
    params = inspect.signature(MODEL_BUILDERS[spec["name"]]).parameters
    unknown = [a for a in spec if a != "name" and a not in params]
    if unknown:
        raise ValueError(f"{key}: {spec['name']} takes no argument(s) {unknown}; allowed: {', '.join(params)}")


def build_model(name: str, num_classes: int = 10, **kwargs) -> nn.Module:
    """Build a model by name ("resnet_cifar" or "resnet18_cifar") with its keyword arguments."""
    if name not in MODEL_BUILDERS:
        raise ValueError(f"model: unknown name {name!r}; allowed: {', '.join(MODEL_NAMES)}")
    return MODEL_BUILDERS[name](num_classes=num_classes, **kwargs)


def model_from_spec(spec: dict, **changes) -> nn.Module:
    """Build from a spec dict {"name": ..., **kwargs} (as stored in profiles and checkpoints), with ``changes`` applied."""
    kwargs = {**spec, **changes}
    if "name" not in kwargs:
        raise ValueError(f"model spec {spec!r} has no 'name'; allowed names: {', '.join(MODEL_NAMES)}")
    return build_model(kwargs.pop("name"), **kwargs)


# ----------------------------------------------------------------------------- ResNet anatomy
# One place for what pruning (04), trimming (05) and checkpoints need to know about a ResNet with BasicBlocks,
# coursekit's ResNetCifar and torchvision's resnet18/34 alike.

def is_residual_block(module: nn.Module) -> bool:
    """A BasicBlock (coursekit's or torchvision's): conv1, bn1, conv2, bn2 and a shortcut."""
    return all(hasattr(module, a) for a in ("conv1", "bn1", "conv2", "bn2"))


def block_changes_shape(block: nn.Module) -> bool:
    """True when the block's output differs from its input in shape (a stride or a channel change): such a block
    cannot be replaced by the identity, and its shortcut is a 1x1 projection."""
    return block.conv1.stride != (1, 1) or block.conv1.in_channels != block.conv2.out_channels


def projection_shortcut(block: nn.Module) -> nn.Sequential | None:
    """The block's 1x1 conv + BN shortcut (``shortcut`` in coursekit, ``downsample`` in torchvision), or None for
    an identity shortcut."""
    proj = getattr(block, "shortcut", None)
    if proj is None:
        proj = getattr(block, "downsample", None)
    return proj if proj is not None and len(proj) > 0 else None


def stem_conv_bn(model: nn.Module) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    """(conv, bn) of the network's first layer: ``stem`` in ResNetCifar, ``conv1``/``bn1`` in torchvision."""
    if hasattr(model, "stem"):
        return model.stem[0], model.stem[1]
    return model.conv1, model.bn1


def set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Replace the submodule called ``name`` (dotted) by ``new``, in place."""
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)
