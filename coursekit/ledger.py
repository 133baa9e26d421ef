"""The run ledger: one JSON object per evaluated model in ``<run_dir>/ledger.jsonl``.

Every notebook appends to it; later chapters, the course runner and the tests
read it. Fields and types follow COURSE_DESIGN.md. Introduced in
notebooks/00_baseline.ipynb.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["LEDGER_FIELDS", "validate_record", "append_record", "read_ledger", "ledger_table"]

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


def validate_record(record: dict) -> dict:
    """Raise ValueError naming the field when ``record`` does not match the ledger schema."""
    missing = [k for k in LEDGER_FIELDS if k not in record]
    if missing:
        raise ValueError(f"ledger record lacks field(s) {missing}")
    for key, kind in LEDGER_FIELDS.items():
        value = record[key]
        if isinstance(value, bool) or not isinstance(value, kind):
            raise ValueError(f"ledger field {key!r}: {value!r} is not of type {kind}")
    if record["accuracy"] is not None and not 0.0 <= record["accuracy"] <= 1.0:
        raise ValueError(f"ledger field 'accuracy': {record['accuracy']!r} is outside [0, 1]")
    for k, v in record["latency_ms"].items():
        if not isinstance(v, (int, float)) or v < 0:
            raise ValueError(f"ledger field 'latency_ms'[{k!r}]: {v!r} is not a non-negative number")
    return record


def append_record(run_dir: str | os.PathLike, record: dict) -> Path:
    """Validate ``record`` and append it as one line to ``<run_dir>/ledger.jsonl``."""
    validate_record(record)
    path = Path(run_dir) / "ledger.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
    return path


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


def _fmt_int(n: int) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return str(n)


def ledger_table(records: list[dict]) -> str:
    """A markdown table: notebook, stage, model, accuracy, params, MACs, sizes and every latency key."""
    lat_keys = sorted({k for r in records for k in r.get("latency_ms", {})},
                      key=lambda k: (k.split("_b")[0], int(k.split("_b")[1]) if "_b" in k and k.split("_b")[1].isdigit() else 0))
    head = ["notebook", "stage", "model", "profile", "seed", "test acc", "params", "nonzero", "MACs",
            "size", "gzip"] + [f"{k} ms" for k in lat_keys]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in records:
        acc = "" if r.get("accuracy") is None else f"{100 * r['accuracy']:.2f}%"
        row = [r["notebook"], r["stage"], r["model"], r["profile"], str(r["seed"]), acc, _fmt_int(r["params"]),
               _fmt_int(r["nonzero_params"]), _fmt_int(r["macs"]), f"{r['size_bytes'] / 1e6:.2f} MB",
               f"{r['size_gzip_bytes'] / 1e6:.2f} MB"]
        row += [f"{r['latency_ms'][k]:.2f}" if k in r["latency_ms"] else "" for k in lat_keys]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)
