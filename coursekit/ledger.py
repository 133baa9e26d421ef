"""The run ledger: one JSON object per evaluated model in ``<run_dir>/ledger.jsonl``.

Every notebook appends to it; later chapters, the course runner and the tests
read it. Fields and types: docs/ARCHITECTURE.md (the run ledger). Introduced in
notebooks/00_baseline.ipynb.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from .files import append_line

__all__ = ["LEDGER_FIELDS", "OPTIONAL_FIELDS", "validate_record", "append_record", "read_ledger", "ledger_table", "latency_keys",
           "relative_table", "headline"]

LEDGER_FIELDS: dict[str, type | tuple] = {
    "notebook": str,
    "stage": str,
    "model": str,
    "dataset": str,
    "profile": str,
    "device": str,
    "seed": int,
    "accuracy": (float, type(None)),
    "params": int,
    "nonzero_params": int,
    "macs": int,
    "size_bytes": int,
    "size_gzip_bytes": int,
    "latency_ms": dict,
    "extra": dict,
}
# Part 2's fields (transformers and language models): optional, checked when present.
OPTIONAL_FIELDS: dict[str, type | tuple] = {
    "task": str,
    "perplexity": (float, type(None)),
}


def validate_record(record: dict) -> dict:
    """Raise ValueError naming the field when ``record`` does not match the ledger schema."""
    missing = [k for k in LEDGER_FIELDS if k not in record]
    if missing:
        raise ValueError(f"ledger record lacks field(s) {missing}")
    for key, kind in LEDGER_FIELDS.items():
        value = record[key]
        if isinstance(value, bool) or not isinstance(value, kind):
            raise ValueError(f"ledger field {key!r}: {value!r} is not of type {kind}")
    for key, kind in OPTIONAL_FIELDS.items():
        if key in record and (isinstance(record[key], bool) or not isinstance(record[key], kind)):
            raise ValueError(f"ledger field {key!r}: {record[key]!r} is not of type {kind}")
    if record["accuracy"] is not None and not 0.0 <= record["accuracy"] <= 1.0:
        raise ValueError(f"ledger field 'accuracy': {record['accuracy']!r} is outside [0, 1]")
    for k, v in record["latency_ms"].items():
        if not isinstance(v, (int, float)) or v < 0:
            raise ValueError(f"ledger field 'latency_ms'[{k!r}]: {v!r} is not a non-negative number")
    return record


def append_record(run_dir: str | os.PathLike, record: dict) -> Path:
    """Validate ``record`` and append it as one line to ``<run_dir>/ledger.jsonl`` (main process only)."""
    validate_record(record)
    return append_line(Path(run_dir) / "ledger.jsonl", json.dumps(record, sort_keys=True))


def read_ledger(run_dir: str | os.PathLike, latest: bool = False, **where) -> list[dict]:
    """All records of ``<run_dir>/ledger.jsonl`` (empty when absent), filtered by ``field=value``.

    latest=True keeps only the newest record of each (notebook, model, seed, profile, dataset), so a
    notebook rerun in the same run dir replaces its rows in tables instead of repeating them.
    """
    path = Path(run_dir) / "ledger.jsonl"
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    records = [r for r in records if all(r.get(k) == v for k, v in where.items())]
    if latest:
        newest = {(r["notebook"], r["model"], r["seed"], r["profile"], r["dataset"]): r for r in records}
        records = [r for r in records if newest[(r["notebook"], r["model"], r["seed"], r["profile"], r["dataset"])] is r]
    return records


def latency_keys(records: list[dict]) -> list[str]:
    """Every latency key of ``records`` ("cpu_b1", "cuda_b256", ...), sorted by device, then batch size."""
    keys = {k for r in records for k in r.get("latency_ms", {})}

    def order(k: str):
        batch = re.search(r"_b(\d+)", k)
        return k.split("_")[0], int(batch.group(1)) if batch else 0, k

    return sorted(keys, key=order)


def _fmt_int(n: int) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return str(n)


def ledger_table(records: list[dict]) -> str:
    """A markdown table: notebook, stage, model, accuracy, params, MACs, sizes and every latency key
    (led by a "run" column when records carry one, as the sweep runs of ``coursekit report`` do; a "runtime" column,
    e.g. "onnxruntime int8", when records name the runtime that ran them, as chapters 11 and 12 do, so that one
    model can be compared across runtimes)."""
    lat_keys = latency_keys(records)
    head = ["notebook", "stage", "model", "profile", "seed", "test acc", "params", "nonzero", "MACs",
            "size", "gzip"] + [f"{k} ms" for k in lat_keys]
    with_run = any("run" in r for r in records)
    with_runtime = any("runtime" in (r.get("extra") or {}) for r in records)
    head = ["run"] * with_run + head[:3] + ["runtime"] * with_runtime + head[3:]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in records:
        acc = "" if r.get("accuracy") is None else f"{100 * r['accuracy']:.2f}%"
        row = [r["notebook"], r["stage"], r["model"], r["profile"], str(r["seed"]), acc, _fmt_int(r["params"]),
               _fmt_int(r["nonzero_params"]), _fmt_int(r["macs"]), f"{r['size_bytes'] / 1e6:.2f} MB",
               f"{r['size_gzip_bytes'] / 1e6:.2f} MB"]
        row += [f"{r['latency_ms'][k]:.2f}" if k in r["latency_ms"] else "" for k in lat_keys]
        extra = r.get("extra") or {}
        runtime = " ".join(str(extra[k]) for k in ("runtime", "precision") if extra.get(k))
        row = [str(r.get("run", ""))] * with_run + row[:3] + [runtime] * with_runtime + row[3:]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def relative_table(records: list[dict], reference: dict) -> str:
    """A markdown table of ``records`` measured against ``reference`` (one of them, e.g. the teacher):
    stage, model, test accuracy and its difference in points, parameters, MACs, gzip size and every
    latency, each with "x" = reference / model (how many times fewer or faster). Used by 06_pipeline."""
    lat = latency_keys(records)
    head = ["stage", "model", "test acc", "Δ points", "params", "x", "MACs", "x", "gzip", "x"]
    head += [h for k in lat for h in (f"{k} ms", "x")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def ratio(a, b):
        return f"{a / b:.1f}x" if a and b else ""

    for r in records:
        acc, ref_acc = r.get("accuracy"), reference.get("accuracy")
        row = [r["stage"], r["model"], "" if acc is None else f"{100 * acc:.2f}%",
               "" if acc is None or ref_acc is None else f"{100 * (acc - ref_acc):+.2f}",
               _fmt_int(r["params"]), ratio(reference["params"], r["params"]), _fmt_int(r["macs"]),
               ratio(reference["macs"], r["macs"]), f"{r['size_gzip_bytes'] / 1e3:.1f} kB",
               ratio(reference["size_gzip_bytes"], r["size_gzip_bytes"])]
        for k in lat:
            v, ref = r["latency_ms"].get(k), reference["latency_ms"].get(k)
            row += ["" if v is None else f"{v:.2f}", ratio(ref, v) if v is not None and ref is not None else ""]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def headline(reference: dict, final: dict, latency_key: str) -> str:
    """"N times fewer parameters, M times faster on <latency_key>, accuracy down x points", from two records."""
    change = 100 * (final["accuracy"] - reference["accuracy"])
    return (f"{reference['params'] / final['params']:.1f} times fewer parameters, "
            f"{reference['latency_ms'][latency_key] / final['latency_ms'][latency_key]:.2f} times faster at {latency_key}, "
            f"accuracy {'down' if change < 0 else 'up'} {abs(change):.2f} points "
            f"({100 * reference['accuracy']:.2f}% -> {100 * final['accuracy']:.2f}%)")
