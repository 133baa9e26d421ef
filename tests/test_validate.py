"""One way to refuse a bad argument (coursekit.validate): one message style, and no module writes the check again."""

import re
from pathlib import Path

import pytest

from coursekit.validate import fraction, integer, number, one_of

PACKAGE = Path(__file__).resolve().parent.parent / "coursekit"


@pytest.mark.parametrize("call,message", [
    (lambda: integer("epochs", 0, lo=1), "epochs: 0 is not allowed; use an integer >= 1"),
    (lambda: integer("epochs", True, lo=1), "epochs: True is not allowed; use an integer >= 1"),
    (lambda: integer("k", 7, lo=0, hi=5), "k: 7 is not allowed; use an integer from 0 to 5"),
    (lambda: integer("seed", -1, lo=0, allowed="a non-negative integer"), "seed: -1 is not allowed; use a non-negative integer"),
    (lambda: number("lr", 0, lo=0, lo_open=True), "lr: 0 is not allowed; use a positive number"),
    (lambda: number("alpha", 1.5, lo=0, hi=1), r"alpha: 1.5 is not allowed; use a number in \[0, 1\]"),
    (lambda: fraction("sparsity", 1.0), r"sparsity: 1.0 is not allowed; use a number in \[0, 1\)"),
    (lambda: fraction("sparsity", False), r"sparsity: False is not allowed; use a number in \[0, 1\)"),
    (lambda: one_of("amp", "bf17", ("auto", "off")), "amp: 'bf17' is not allowed; use auto, off"),
])
def test_every_refusal_names_the_parameter_the_value_and_what_is_allowed(call, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        call()


def test_good_values_pass_through():
    assert integer("n", 3, lo=1) == 3 and fraction("s", 0) == 0.0 and number("t", 2, lo=0, lo_open=True) == 2.0
    assert one_of("amp", "off", ("auto", "off")) == "off"


def test_no_module_writes_the_int_but_not_bool_check_again():
    idiom = re.compile(r"isinstance\((\w+), bool\) or not isinstance\(\1, int\)|not isinstance\((\w+), int\) or "
                       r"isinstance\(\2, bool\)")
    found = [f"{p.name}:{i}" for p in sorted(PACKAGE.glob("*.py")) if p.name != "validate.py"
             for i, line in enumerate(p.read_text().splitlines(), 1) if idiom.search(line)]
    assert not found, f"use coursekit.validate.integer instead: {found}"
