import pytest

from coursekit.ledger import read_ledger
from coursekit.models import ResNetCifar
from coursekit.session import start_session


def test_record_all_measures_side_by_side_and_appends_one_record_each(tmp_path):
    S = start_session("99_test", profile="smoke", run_dir=str(tmp_path / "run"), print_report=False)
    big, small = ResNetCifar((1, 1, 1), 16, num_classes=2), ResNetCifar((1, 1, 1), 4, num_classes=2)
    recs = S.record_all([{"model": big, "stage": "s", "name": "big", "accuracy": 0.9},
                         {"model": small, "stage": "s", "name": "small", "accuracy": 0.8, "extra": {"k": 1}}])
    assert list(recs) == ["big", "small"]
    on_disk = read_ledger(tmp_path / "run", notebook="99_test")
    assert [r["model"] for r in on_disk] == ["big", "small"] and on_disk[1]["extra"] == {"k": 1}
    keys = {f"cpu_b{b}" for b in S.profile.latency_batch_sizes}
    assert all(set(r["latency_ms"]) == keys and min(r["latency_ms"].values()) > 0 for r in on_disk)
    assert recs["big"]["macs"] > recs["small"]["macs"]
    with pytest.raises(ValueError, match="unique"):
        S.record_all([{"model": big, "stage": "s", "name": "x", "accuracy": 0.1}] * 2)
