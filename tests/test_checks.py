import pytest

from coursekit import checks


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
    with pytest.raises(AssertionError, match="Hint:"):
        check(wrong)


def test_check_accuracy_catches_a_constant_denominator():
    with pytest.raises(AssertionError, match="Hint"):
        checks.check_accuracy(lambda logits, y: (logits.argmax(1) == y).float().sum().item() / 4)
