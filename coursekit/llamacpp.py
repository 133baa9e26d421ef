"""A GGUF file run by llama.cpp from Python, through ``xllamacpp`` (prebuilt CPU wheels of llama.cpp's server
library; it listens on 127.0.0.1 only, on a free port, and nothing outside this machine can reach it): greedy
generation from token ids, with llama.cpp's own timings of prefill (the prompt, ms per token) and decode (ms per
generated token). Introduced in notebooks/12_deployment.ipynb.
"""

from __future__ import annotations

import os
import statistics
from pathlib import Path

__all__ = ["llamacpp_available", "LlamaCppModel"]


def llamacpp_available() -> str | None:
    """None when ``xllamacpp`` imports, else the one-line reason (the package is missing on this platform)."""
    try:
        import xllamacpp  # noqa: F401
    except ImportError as e:
        return f"xllamacpp is not installed ({e}); pip install xllamacpp (prebuilt CPU wheels for Linux, macOS, Windows)"
    return None


class LlamaCppModel:
    """One GGUF model loaded in llama.cpp with ``threads`` threads for decode and prefill, a context of ``n_ctx``
    tokens, one slot, no prompt cache (every call prefills its prompt again, so prefill is timed every time)."""

    def __init__(self, path: str | os.PathLike, *, threads: int, n_ctx: int = 512):
        import xllamacpp

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"LlamaCppModel: no GGUF file at {path}")
        params = xllamacpp.CommonParams()
        params.model.path = str(path)
        params.n_ctx = int(n_ctx)
        params.n_parallel = 1
        params.cpuparams.n_threads = int(threads)
        params.cpuparams_batch.n_threads = int(threads)
        params.verbosity = -1
        self.path, self.threads, self.n_ctx = path, int(threads), int(n_ctx)
        self.server = xllamacpp.Server(params)

    def complete(self, prompt_ids: list[int], n_predict: int) -> dict:
        """Greedy continuation of ``prompt_ids`` (token ids), exactly ``n_predict`` tokens (end of text ignored).
        Returns {"text", "prefill_ms_per_token", "decode_ms_per_token", "prompt_tokens", "generated_tokens"}."""
        if len(prompt_ids) + n_predict > self.n_ctx:
            raise ValueError(f"n_predict: {len(prompt_ids)} prompt + {n_predict} new tokens exceed the context of "
                             f"{self.n_ctx}")
        request = {"prompt": [int(t) for t in prompt_ids], "max_tokens": int(n_predict), "temperature": 0.0,
                   "top_k": 1, "cache_prompt": False, "ignore_eos": True, "seed": 0}
        out = self.server.handle_completions(request)
        if "error" in out:
            raise RuntimeError(f"llama.cpp refused the request: {out['error']}")
        t = out["timings"]
        return {"text": out["choices"][0]["text"], "prefill_ms_per_token": t["prompt_per_token_ms"],
                "decode_ms_per_token": t["predicted_per_token_ms"], "prompt_tokens": t["prompt_n"],
                "generated_tokens": t["predicted_n"]}

    def timings(self, prompt_ids: list[int], n_predict: int, repeats: int = 3) -> dict:
        """Medians over ``repeats`` calls (after one warm-up) of prefill and decode ms per token, and the last text."""
        self.complete(prompt_ids, min(n_predict, 8))
        runs = [self.complete(prompt_ids, n_predict) for _ in range(repeats)]
        return {"prefill_ms_per_token": statistics.median(r["prefill_ms_per_token"] for r in runs),
                "decode_ms_per_token": statistics.median(r["decode_ms_per_token"] for r in runs),
                "decode_range_ms": (min(r["decode_ms_per_token"] for r in runs), max(r["decode_ms_per_token"] for r in runs)),
                "text": runs[-1]["text"], "prompt_tokens": runs[-1]["prompt_tokens"]}
