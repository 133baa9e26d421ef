"""How long the chapters take: measured seconds per notebook and profile, for the plan ``coursekit run`` prints
before it starts (``make course``) and the README's table.

Each figure is a measurement, with where it came from; a profile or chapter without one is said to be unmeasured,
never guessed. Update a profile's figures from a run's ``executed.json`` (``coursekit run`` writes each notebook's
seconds there) when the chapters change.
"""

from __future__ import annotations

__all__ = ["MEASURED", "estimate_seconds", "plan_message", "clock"]

MEASURED = {
    "cpu": {
        "machine": "2-core development machine (AMD EPYC, 24 GiB, no GPU)",
        "source": "each committed notebook's printed wall time (one cpu-profile run per chapter, reused models "
                  "included: 01's source model and 02's teacher come from 00's run dir; 01 re-timed on a 2-core Intel Xeon)",
        "seconds": {"00_baseline": 198, "01_transfer_learning": 195, "02_knowledge_distillation": 412,
                    "03_pruning_unstructured": 272, "04_pruning_structured": 180, "05_layer_trimming": 312,
                    "06_pipeline": 288, "07_transformer_transfer": 343, "08_transformer_distillation": 301,
                    "09_transformer_pruning": 310, "10_llm_compression": 339,
                    "11_quantization": 344, "12_deployment": 188,
                    "13_speech_capstone": 351},
    },
    "smoke": {
        "machine": "2-core development machine (AMD EPYC, 24 GiB, no GPU)",
        "source": "one `coursekit run --profile smoke` of 00-09 into a fresh run dir and an empty cache folder, the "
                  "machine also running unit tests; 10, 11 and 12 timed alone with the 6-layer SmolLM2 stand-in "
                  "(papermill's wall time, a fresh run dir: their stand-in models trained there, the GGUF conversion "
                  "cached), 13 alone (its printed wall time, features cached)",
        "seconds": {"00_baseline": 51, "01_transfer_learning": 20, "02_knowledge_distillation": 16,
                    "03_pruning_unstructured": 16, "04_pruning_structured": 19, "05_layer_trimming": 18,
                    "06_pipeline": 18, "07_transformer_transfer": 40, "08_transformer_distillation": 35,
                    "09_transformer_pruning": 46, "10_llm_compression": 36,
                    "11_quantization": 54, "12_deployment": 83,
                    "13_speech_capstone": 30},
    },
    "gpu": {"machine": None, "source": "no GPU run has been timed yet", "seconds": {}},
}


def clock(seconds: float) -> str:
    """``seconds`` as "1 h 02 min", "5 min 07 s" or "42 s"."""
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 60} min {s % 60:02d} s" if s >= 60 else f"{s} s"


def estimate_seconds(profile: str, stems) -> tuple[float, list[str]]:
    """(measured seconds of the chapters ``stems`` on ``profile`` added up, the stems with no measurement)."""
    table = MEASURED.get(profile, {"seconds": {}})["seconds"]
    known = [table[s] for s in stems if s in table]
    return float(sum(known)), [s for s in stems if s not in table]


def plan_message(profile: str, stems, runs: int = 1) -> str:
    """What ``coursekit run`` prints before the first notebook: the chapters, the profile, and how long they took
    when measured (on which machine), or that they have not been timed."""
    stems = list(stems)
    total, unknown = estimate_seconds(profile, stems)
    head = f"plan: {len(stems)} notebook(s) x {runs} run(s) on the {profile} profile"
    if len(unknown) == len(stems):
        return f"{head}; no measured time for this profile yet ({MEASURED.get(profile, {}).get('source', 'unknown')})"
    where = MEASURED[profile]["machine"]
    text = f"{head}; measured before: about {clock(total * runs)} on a {where}"
    if unknown:
        text += f", not counting {', '.join(unknown)} (not timed)"
    return text + " (another machine takes another time; a first run also decodes the datasets into the cache folder)."
