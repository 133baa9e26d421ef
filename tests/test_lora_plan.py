"""Exercise 07.4's check (coursekit.textchecks.check_lora_plan): stored bytes of a peft plan counted from its adapter
state dict, dev accuracy judged against the full fine-tune's, bad input refused."""

import pytest
from peft import LoraConfig, get_peft_model

from coursekit.textchecks import check_lora_plan
from coursekit.textmodels import TextClassifier


def test_the_lora_plan_check_counts_what_a_task_stores_and_judges_both_targets(tiny_bert, capsys):
    model = get_peft_model(TextClassifier(tiny_bert(layers=2), 2),
                           LoraConfig(r=2, lora_alpha=4, target_modules=["query", "value"], modules_to_save=["head"]))
    # 2 layers x (query, value) x r (16 + 16) + the head's 16 x 2 + 2
    expected_kb = (2 * 2 * 2 * (16 + 16) + 16 * 2 + 2) * 4 / 1e3
    got = check_lora_plan(model, accuracy_of=lambda m: 0.86, reference_accuracy=0.87, max_stored_kb=2.0, max_drop=1.5)
    assert got["stored_kb"] == pytest.approx(expected_kb) and got["drop_points"] == pytest.approx(1.0)
    assert "LoRA r=2 on ['query', 'value']" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="1.2 kB per task; the target is at most 0 kB"):
        check_lora_plan(model, accuracy_of=lambda m: 0.86, reference_accuracy=0.87, max_stored_kb=0.1, max_drop=1.5)
    with pytest.raises(AssertionError, match="4.00 points below the full fine-tune; at most 1.50 allowed"):
        check_lora_plan(model, accuracy_of=lambda m: 0.83, reference_accuracy=0.87, max_stored_kb=2.0, max_drop=1.5)
    check_lora_plan(model, accuracy_of=lambda m: 0.5, reference_accuracy=0.87, max_stored_kb=2.0, max_drop=1.5,
                    judge="size")  # accuracy reported, not judged
    with pytest.raises(ValueError, match="model: TextClassifier is not allowed"):
        check_lora_plan(TextClassifier(tiny_bert(layers=2), 2), accuracy_of=lambda m: 0.9, reference_accuracy=0.9,
                        max_stored_kb=2.0, max_drop=1.0)
