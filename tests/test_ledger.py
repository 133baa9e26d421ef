import json

import pytest

from coursekit.ledger import LEDGER_FIELDS, append_record, ledger_table, read_ledger, validate_record


def _rec(**kw):
    r = {"notebook": "00_baseline", "stage": "baseline", "model": "base", "dataset": "cifar10", "profile": "cpu",
         "device": "cpu", "seed": 0, "accuracy": 0.8, "params": 300_000, "nonzero_params": 299_000,
         "macs": 12_900_000, "size_bytes": 1_250_000, "size_gzip_bytes": 1_150_000,
         "latency_ms": {"cpu_b1": 1.5, "cpu_b64": 40.0}, "extra": {}}
    r.update(kw)
    return r


def test_append_and_read_back(tmp_path):
    append_record(tmp_path, _rec())
    append_record(tmp_path, _rec(model="small", accuracy=None))
    lines = (tmp_path / "ledger.jsonl").read_text().splitlines()
    assert len(lines) == 2 and set(json.loads(lines[0])) == set(LEDGER_FIELDS)
    assert [r["model"] for r in read_ledger(tmp_path)] == ["base", "small"]
    assert [r["model"] for r in read_ledger(tmp_path, model="small")] == ["small"]
    assert read_ledger(tmp_path / "empty") == []


@pytest.mark.parametrize("change,match", [
    ({"seed": "0"}, "'seed'"),
    ({"accuracy": 80.0}, "outside"),
    ({"params": 1.5}, "'params'"),
    ({"latency_ms": {"cpu_b1": -1}}, "latency_ms"),
])
def test_schema_errors_name_the_field(tmp_path, change, match):
    with pytest.raises(ValueError, match=match):
        append_record(tmp_path, _rec(**change))
    assert not (tmp_path / "ledger.jsonl").exists(), "a bad record is not written"


def test_missing_field():
    r = _rec()
    del r["macs"]
    with pytest.raises(ValueError, match="macs"):
        validate_record(r)


def test_table_has_a_row_per_record_and_every_latency_column():
    table = ledger_table([_rec(), _rec(model="gpu", latency_ms={"cuda_b256": 3.0})])
    lines = table.splitlines()
    assert len(lines) == 4
    assert "cpu_b1 ms" in lines[0] and "cpu_b64 ms" in lines[0] and "cuda_b256 ms" in lines[0]
    assert lines[0].index("cpu_b1 ms") < lines[0].index("cpu_b64 ms"), "batch sizes sort numerically"
    assert "80.00%" in lines[2] and "12.90M" in lines[2]


def test_latest_keeps_the_newest_record_of_a_rerun(tmp_path):
    append_record(tmp_path, _rec(accuracy=0.5))
    append_record(tmp_path, _rec(model="small"))
    append_record(tmp_path, _rec(accuracy=0.7))
    assert [r["accuracy"] for r in read_ledger(tmp_path)] == [0.5, 0.8, 0.7]
    assert [(r["model"], r["accuracy"]) for r in read_ledger(tmp_path, latest=True)] == [("small", 0.8), ("base", 0.7)]


def _row(model, acc, params, macs, gzip, lat):
    return {"stage": "s", "model": model, "accuracy": acc, "params": params, "macs": macs, "size_gzip_bytes": gzip,
            "latency_ms": lat}


def test_relative_table_and_headline_against_a_reference():
    from coursekit.ledger import headline, relative_table

    teacher = _row("teacher", 0.90, 100_000, 8_000_000, 400_000, {"cpu_b64": 8.0})
    final = _row("final", 0.87, 10_000, 1_000_000, 40_000, {"cpu_b64": 2.0})
    base = _row("base", None, 100_000, 8_000_000, 400_000, {})
    table = relative_table([base, teacher, final], teacher)
    lines = table.splitlines()
    assert lines[0].startswith("| stage | model | test acc | Δ points | params | x |")
    assert "| final | 87.00% | -3.00 | 10.00k | 10.0x | 1.00M | 8.0x | 40.0 kB | 10.0x | 2.00 | 4.0x |" in lines[4]
    assert "| base |  |  |" in lines[2], "no accuracy, no difference, no latency: blank cells"
    assert headline(teacher, final, "cpu_b64") == ("10.0 times fewer parameters, 4.00 times faster at cpu_b64, accuracy down "
                                                   "3.00 points (90.00% -> 87.00%)")


def test_ledger_table_names_the_runtime_when_records_carry_one():
    plain = ledger_table([_rec()])
    assert "runtime" not in plain.splitlines()[0]
    table = ledger_table([_rec(model="final_eager", extra={"runtime": "eager", "precision": "fp32"}),
                          _rec(model="final_ort", extra={"runtime": "onnxruntime", "precision": "int8"}), _rec()])
    head, _, eager, ort, old = table.splitlines()
    assert head.startswith("| notebook | stage | model | runtime | profile |")
    assert "| final_eager | eager fp32 | cpu |" in eager and "| final_ort | onnxruntime int8 | cpu |" in ort
    assert "| base |  | cpu |" in old  # a record without a runtime: an empty cell, the columns still line up
    assert len({line.count("|") for line in (head, eager, ort, old)}) == 1
