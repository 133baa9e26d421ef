import copy

import pytest
import torch
from torch import nn

from coursekit.lora import LoRALinear, add_lora, load_peft_adapters, merge_lora


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = nn.ModuleDict({"query": nn.Linear(12, 12), "value": nn.Linear(12, 12), "ffn": nn.Linear(12, 20)})
        self.head = nn.Linear(20, 3)

    def forward(self, x):
        b = self.block
        return self.head(torch.relu(b["ffn"](b["query"](x) + b["value"](x))))


TARGET = r"block\.(query|value)"


def test_lora_starts_as_the_base_model_and_merges_to_the_same_function():
    torch.manual_seed(0)
    model, x = Tiny(), torch.randn(5, 12)
    before = model(x)
    wrapped = add_lora(model, TARGET, r=4, alpha=8, train_also=("head",))
    assert set(wrapped) == {"block.query", "block.value"}
    assert torch.equal(model(x), before), "B = 0: training starts from the pretrained function"
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"block.query.lora_A", "block.query.lora_B", "block.value.lora_A", "block.value.lora_B",
                         "head.weight", "head.bias"}
    with torch.no_grad():
        for layer in wrapped.values():
            layer.lora_B.normal_()
    after = model(x)
    assert not torch.allclose(after, before)
    assert int(torch.linalg.matrix_rank(wrapped["block.query"].delta_weight())) <= 4
    assert merge_lora(model) == 2 and isinstance(model.block["query"], nn.Linear)
    assert torch.allclose(model(x), after, atol=1e-5)


def test_our_lora_computes_what_peft_computes_with_the_same_adapters():
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    base, x = Tiny(), torch.randn(7, 12)
    config = peft.LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=TARGET, modules_to_save=["head"])
    theirs = peft.get_peft_model(copy.deepcopy(base), config)
    with torch.no_grad():  # a trained adapter: B no longer zero
        for n, p in theirs.named_parameters():
            if "lora_B" in n:
                p.normal_()
    ours = copy.deepcopy(base)
    wrapped = add_lora(ours, TARGET, r=4, alpha=8, train_also=("head",))
    assert load_peft_adapters(wrapped, peft.get_peft_model_state_dict(theirs)) == 2
    assert sum(p.numel() for p in ours.parameters() if p.requires_grad) == \
        sum(p.numel() for p in theirs.parameters() if p.requires_grad)
    assert torch.allclose(ours(x), theirs(x), atol=1e-6)
    merged_theirs = theirs.merge_and_unload()
    merge_lora(ours)
    assert torch.allclose(ours.block["query"].weight, merged_theirs.block["query"].weight, atol=1e-6)


def test_lora_refuses_a_rank_or_target_that_cannot_work():
    with pytest.raises(ValueError, match="r: 0 is not allowed"):
        LoRALinear(nn.Linear(4, 4), 0, 1.0)
    with pytest.raises(ValueError, match="r: 5 is not allowed"):
        LoRALinear(nn.Linear(4, 4), 5, 1.0)
    with pytest.raises(ValueError, match="matches no nn.Linear"):
        add_lora(Tiny(), r"nothing", r=2, alpha=4)
