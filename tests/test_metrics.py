import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from coursekit.ledger import validate_record
from coursekit.metrics import (
    count_macs,
    count_nonzero_params,
    count_params,
    measure_latency,
    model_record,
    state_dict_bytes,
)
from coursekit.models import ResNetCifar


def test_macs_of_a_conv_match_a_hand_count():
    conv = nn.Conv2d(3, 16, 3, padding=1, bias=False)
    assert count_macs(conv, (3, 32, 32)) == 16 * 32 * 32 * (3 * 3 * 3)  # outputs x (c_in k k)
    strided = nn.Conv2d(8, 4, 3, stride=2, padding=1, bias=False)
    assert count_macs(strided, (8, 10, 10)) == 4 * 5 * 5 * (8 * 9)


def test_macs_of_a_linear_layer_match_a_hand_count():
    assert count_macs(nn.Sequential(nn.Flatten(), nn.Linear(48, 10)), (3, 4, 4)) == 48 * 10


def test_params_and_nonzero_params_see_through_pruning_masks():
    lin = nn.Linear(10, 4)
    assert count_params(lin) == 44
    prune.l1_unstructured(lin, "weight", amount=0.5)
    assert count_params(lin) == 44, "weight_orig counted once, the mask is a buffer"
    assert count_nonzero_params(lin) == 20 + int(torch.count_nonzero(lin.bias))


def test_state_dict_bytes_raw_and_gzip():
    dense = nn.Linear(256, 256)
    zero = nn.Linear(256, 256)
    nn.init.zeros_(zero.weight)
    a, b = state_dict_bytes(dense), state_dict_bytes(zero)
    assert a["raw"] > 256 * 256 * 4 and abs(a["raw"] - b["raw"]) < 64
    assert b["gzip"] < a["gzip"] / 10, "zeros compress, random floats do not"


def test_measure_latency_reports_median_and_spread():
    out = measure_latency(nn.Linear(8, 8), 4, input_size=(8,), min_run_time=0.01, channels_last=False, threads=1)
    assert out["median_ms"] > 0 and out["iqr_ms"] >= 0 and out["runs"] >= 1
    assert out["threads"] == 1 and out["batch_size"] == 4
    with pytest.raises(ValueError, match="batch_size"):
        measure_latency(nn.Linear(8, 8), 0, input_size=(8,))


def test_model_record_is_ledger_ready():
    m = ResNetCifar((1, 1, 1), 4)
    rec = model_record(m, notebook="00_baseline", stage="baseline", name="tiny", accuracy=0.5, dataset="cifar10",
                       profile="smoke", device="cpu", seed=3, latency_batch_sizes=(1, 2), min_run_time=0.01,
                       extra={"epochs": 1})
    validate_record(rec)
    assert rec["macs"] == count_macs(m) and rec["params"] == count_params(m)
    assert set(rec["latency_ms"]) == {"cpu_b1", "cpu_b2"} and rec["seed"] == 3 and rec["extra"] == {"epochs": 1}


def test_compare_latency_interleaves_rounds_and_ranks_a_bigger_model_slower():
    from torch import nn

    from coursekit.metrics import compare_latency

    small = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1))
    big = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.Conv2d(64, 64, 3, padding=1))
    out = compare_latency({"small": small, "big": big}, [1, 4], rounds=2, min_run_time=0.01, input_size=(3, 16, 16))
    assert set(out) == {"small", "big"} and set(out["big"]) == {"cpu_b1", "cpu_b4"}
    for row in out.values():
        for r in row.values():
            assert 0 < r["min_ms"] <= r["median_ms"] <= r["max_ms"]
    assert out["big"]["cpu_b4"]["median_ms"] > out["small"]["cpu_b4"]["median_ms"]
    with pytest.raises(ValueError, match="rounds"):
        compare_latency({"small": small}, [1], rounds=0)


def test_fast_gzip_is_gzip_and_close_to_level_6():
    import gzip
    import io

    import torch

    from coursekit.metrics import state_dict_bytes

    torch.manual_seed(0)
    model = torch.nn.Linear(300, 300)
    slow, fast = state_dict_bytes(model), state_dict_bytes(model, fast=True)
    assert slow["raw"] == fast["raw"] and abs(fast["gzip"] - slow["gzip"]) < 0.02 * slow["gzip"]
    buf = io.BytesIO()
    torch.save({k: v for k, v in model.state_dict().items()}, buf)
    import zlib

    packer = zlib.compressobj(6, zlib.DEFLATED, 31, 9, zlib.Z_HUFFMAN_ONLY)
    assert gzip.decompress(packer.compress(buf.getvalue()) + packer.flush()) == buf.getvalue(), "a real gzip stream"


def test_fast_gzip_is_one_gzip_file_of_the_exact_bytes_and_remembers_shared_tensors():
    """The pieces cover torch.save's archive exactly, a big storage is a piece of its own holding that tensor's bytes,
    and the pieces compressed one by one concatenate into a gzip file of the archive whose length is the size
    reported. A second model sharing the big weight's values gets it from memory, with the size a cold run gives."""
    import copy
    import gzip
    import io
    import zlib

    import torch

    from coursekit import metrics

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(600, 600), torch.nn.Linear(600, 10))  # a 1.44 MB weight
    buf = io.BytesIO()
    torch.save({k: v.detach() for k, v in model.state_dict().items()}, buf)
    raw = buf.getvalue()
    pieces = metrics._storage_pieces(buf)
    assert pieces[0][0] == 0 and pieces[-1][1] == len(raw)
    assert all(a[1] == b[0] for a, b in zip(pieces, pieces[1:], strict=False)), "consecutive, no gap, no overlap"
    own = [raw[s:e] for s, e, is_own in pieces if is_own]
    assert own == [model[0].weight.detach().numpy().tobytes()], "only the big weight has a piece of its own"

    def member(piece: bytes) -> bytes:
        packer = zlib.compressobj(6, zlib.DEFLATED, 31, 9, zlib.Z_HUFFMAN_ONLY)
        return packer.compress(piece) + packer.flush()

    members = b"".join(member(raw[s:e]) for s, e, _ in pieces)
    assert gzip.decompress(members) == raw, "a valid gzip file of the exact bytes"
    metrics._member_sizes.clear()
    assert metrics.state_dict_bytes(model, fast=True) == {"raw": len(raw), "gzip": len(members)}

    other = copy.deepcopy(model)
    with torch.no_grad():
        other[1].weight.add_(1.0)  # the small layer changes, the big weight keeps its values
    remembered = len(metrics._member_sizes)
    warm = metrics.state_dict_bytes(other, fast=True)["gzip"]
    assert len(metrics._member_sizes) == remembered, "the big weight's size came from memory"
    metrics._member_sizes.clear()
    assert metrics.state_dict_bytes(other, fast=True)["gzip"] == warm, "the same size as compressed afresh"
