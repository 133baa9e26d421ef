"""How big and how fast a model is: parameters, MACs, stored size, latency, and a ledger record.

MACs come from torch.utils.flop_counter.FlopCounterMode, which counts FLOPs
(one multiply-accumulate = 2 FLOPs); we report MACs = FLOPs / 2 per image.
Latency uses torch.utils.benchmark (median and interquartile range over
blocked_autorange runs, threads fixed, CUDA synchronised by the Timer).
Introduced in notebooks/00_baseline.ipynb.
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import io
import logging
import statistics
import struct
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import nn

from .env import require_cuda

__all__ = [
    "count_params",
    "count_nonzero_params",
    "count_macs",
    "state_dict_bytes",
    "file_bytes",
    "latency_medians",
    "measure_latency",
    "compare_latency",
    "model_record",
]


def count_params(model: nn.Module) -> int:
    """Number of parameters (pruning masks' ``weight_orig`` counted once), weights stored quantized included
    (``weightquant.QuantizedLinear`` keeps its weight as codes in buffers, PyTorch's quantized modules in packed
    parameters: both counted as the weights they stand for)."""
    return sum(p.numel() for p in model.parameters()) + _quantized_weights(model)


def _quantized_layers(model: nn.Module):
    """(weights it stands for, its dequantized weight (a function), its bias or None) for every layer whose weight
    is kept outside ``parameters()``: our packed layers (``weight_numel``; their bias is a parameter) and PyTorch's
    quantized modules (``torch.ao.nn.quantized`` and the fused ``torch.ao.nn.intrinsic.quantized``: ``weight()`` and
    ``bias()`` are methods there)."""
    for m in model.modules():
        if hasattr(m, "weight_numel"):
            yield int(m.weight_numel), m.dequantized_weight, None
        elif (type(m).__module__.startswith("torch.ao.nn") and "quantized" in type(m).__module__
              and callable(getattr(m, "weight", None))):
            bias = m.bias() if callable(getattr(m, "bias", None)) else None
            yield m.weight().numel(), lambda m=m: m.weight().dequantize(), bias


def _quantized_weights(model: nn.Module) -> int:
    return sum(n + (0 if bias is None else bias.numel()) for n, _, bias in _quantized_layers(model))


def count_nonzero_params(model: nn.Module) -> int:
    """Parameters that are not zero, seen through pruning masks when present. A parameter shared by two modules
    (tied input and output embeddings) is counted once, as ``count_params`` does."""
    total, seen = 0, set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if id(p) in seen:
                continue
            seen.add(id(p))
            if name.endswith("_orig") and hasattr(module, name[: -len("_orig")] + "_mask"):
                p = getattr(module, name[: -len("_orig")])  # the masked weight
            total += int(torch.count_nonzero(p.detach()))
    for _, weight, bias in _quantized_layers(model):  # weights stored quantized: non-zero after dequantization
        total += int(torch.count_nonzero(weight())) + (0 if bias is None else int(torch.count_nonzero(bias)))
    return total


def count_macs(model: nn.Module, input_size=(3, 32, 32), input_fn=None) -> int:
    """Multiply-accumulates for one input, model in eval mode: one image of ``input_size`` (C, H, W), or
    ``input_fn(1)`` when given (e.g. one token sequence of a stated length, ``textmodels.text_input_fn``)."""
    from torch.utils.flop_counter import FlopCounterMode

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    x = input_fn(1).to(device) if input_fn is not None else torch.zeros(1, *input_size, device=device)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    model.train(was_training)
    return int(counter.get_total_flops() // 2)


def _huffman_gzip_size(chunk) -> int:
    packer = zlib.compressobj(6, zlib.DEFLATED, 31, 9, zlib.Z_HUFFMAN_ONLY)  # wbits 31: gzip header
    return len(packer.compress(chunk) + packer.flush())


_GZIP_PIECE = 16 << 20  # bytes per gzip member, compressed in parallel
_OWN_MEMBER = 1 << 20  # storages at least this big are compressed (and remembered) on their own
_member_sizes: dict[tuple[bytes, int], int] = {}  # (sha1, length) of a storage's bytes -> its compressed size


def _storage_pieces(buf: io.BytesIO) -> list[tuple[int, int, bool]]:
    """Cut the bytes of a ``torch.save`` archive into consecutive pieces (start, end, own): each storage of at least
    ``_OWN_MEMBER`` bytes is a piece of its own (own=True), the bytes between them (headers, small tensors) are the
    other pieces. torch.save writes a zip archive whose entries are stored uncompressed: an entry's bytes start after
    its 30-byte local header, its name and its extra field."""
    raw = buf.getbuffer()
    own = []
    with zipfile.ZipFile(buf) as archive:
        for info in archive.infolist():
            if info.compress_type == zipfile.ZIP_STORED and info.file_size >= _OWN_MEMBER:
                name_len, extra_len = struct.unpack_from("<HH", raw, info.header_offset + 26)
                start = info.header_offset + 30 + name_len + extra_len
                own.append((start, start + info.file_size))
    pieces, pos = [], 0
    for start, end in sorted(own):
        if start > pos:
            pieces.append((pos, start, False))
        pieces.append((start, end, True))
        pos = end
    if pos < len(raw):
        pieces.append((pos, len(raw), False))
    return pieces


def _fast_gzip_size(buf: io.BytesIO) -> int:
    """Size of one valid (multi-member) gzip file of ``buf``'s bytes, deflate's Huffman-only strategy, in members of
    at most 16 MB compressed on all CPU threads (zlib and hashlib release the GIL). A storage of 1 MB or more is a
    member of its own (or several), and its compressed size is remembered by content (SHA-1), so that the weights
    many models share (a frozen encoder, the layers a trimmed model kept) are compressed once per process."""
    if len(_member_sizes) > 100_000:  # a bound, never reached by a course run
        _member_sizes.clear()
    raw = buf.getbuffer()
    pieces = _storage_pieces(buf)
    with ThreadPoolExecutor(max(1, torch.get_num_threads())) as pool:
        keys = list(pool.map(lambda p: (hashlib.sha1(raw[p[0]:p[1]]).digest(), p[1] - p[0]) if p[2] else None, pieces))
        todo = [i for i, k in enumerate(keys) if k is None or k not in _member_sizes]
        chunks = [(i, raw[a:min(a + _GZIP_PIECE, pieces[i][1])]) for i in todo
                  for a in range(pieces[i][0], pieces[i][1], _GZIP_PIECE)]
        sizes = list(pool.map(_huffman_gzip_size, [c for _, c in chunks]))
    new = dict.fromkeys(todo, 0)
    for (i, _), n in zip(chunks, sizes, strict=True):
        new[i] += n
    for i, n in new.items():
        if keys[i] is not None:
            _member_sizes[keys[i]] = n
    return sum(new[i] if i in new else _member_sizes[keys[i]] for i in range(len(pieces)))


def state_dict_bytes(model: nn.Module, fast: bool = False) -> dict:
    """Serialized size of the state dict: {"raw": bytes of torch.save, "gzip": after gzip -6}.

    fast=True compresses with deflate's Huffman-only strategy (still the gzip format) in pieces on all CPU threads,
    each large tensor's compressed size remembered by content (``_fast_gzip_size``): for float weights it is several
    times faster and within 0.1% of gzip -6's size (float mantissas have no repeats for LZ77 to find); Part 2's
    large models use it."""
    buf = io.BytesIO()
    # a quantized module's state dict also holds packed weights and plain numbers (scales, zero points, dtypes)
    torch.save({k: v.detach().cpu() if isinstance(v, torch.Tensor) else v for k, v in model.state_dict().items()}, buf)
    if fast:
        return {"raw": len(buf.getbuffer()), "gzip": _fast_gzip_size(buf)}
    raw = buf.getbuffer()
    return {"raw": len(raw), "gzip": len(gzip.compress(raw, compresslevel=6))}


def file_bytes(path, fast: bool = False) -> dict:
    """A model file's size as stored, measured as ``state_dict_bytes`` measures a state dict: {"raw": bytes, "gzip":
    after gzip -6}, or with ``fast`` deflate's Huffman-only strategy in 16 MB members on all CPU threads (files of
    hundreds of MB: ONNX, GGUF)."""
    with open(path, "rb") as f:
        raw = f.read()
    if not fast:
        return {"raw": len(raw), "gzip": len(gzip.compress(raw, compresslevel=6))}
    view = memoryview(raw)
    with ThreadPoolExecutor(max(1, torch.get_num_threads())) as pool:
        packed = sum(pool.map(_huffman_gzip_size, [view[a:a + _GZIP_PIECE] for a in range(0, len(raw), _GZIP_PIECE)]))
    return {"raw": len(raw), "gzip": packed}


def torch_benchmark():
    """``torch.utils.benchmark``, imported quietly: it imports cpp_extension, which logs a CUDA_HOME warning on
    CPU-only machines; nothing is compiled here, so that one logger is quietened."""
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    from torch.utils import benchmark

    return benchmark


def measure_latency(model: nn.Module, batch_size: int, *, device: torch.device | str = "cpu",
                    input_size=(3, 32, 32), threads: int | None = None, min_run_time: float = 0.3,
                    channels_last: bool = True, input_fn=None) -> dict:
    """Median and spread of one forward pass over a batch, in milliseconds.

    The model is copied to ``device`` in eval mode and run under inference_mode
    after a warm-up; torch.utils.benchmark's blocked_autorange picks the number
    of runs (at least ``min_run_time`` seconds). On CPU ``threads`` fixes the
    thread count (default: torch's current). ``input_fn(batch_size)`` makes the input when given (token ids
    of a text model; channels_last applies to 4-D image batches only). Returns {"median_ms", "iqr_ms",
    "runs", "threads", "batch_size", "device"}.
    """
    benchmark = torch_benchmark()
    if batch_size < 1:
        raise ValueError(f"batch_size: {batch_size!r} is not allowed; use a positive integer")
    device = require_cuda(device, "measure_latency")
    threads = threads or torch.get_num_threads()
    m = copy.deepcopy(model).to(device).eval()
    x = input_fn(batch_size).to(device) if input_fn is not None else torch.randn(batch_size, *input_size, device=device)
    if channels_last and x.dim() == 4:
        m = m.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        for _ in range(3):
            m(x)
        timer = benchmark.Timer(
            stmt="m(x)", globals={"m": m, "x": x}, num_threads=threads if device.type == "cpu" else 1,
            label="latency", description=f"b{batch_size}",
        )
        result = timer.blocked_autorange(min_run_time=min_run_time)
    return {
        "median_ms": result.median * 1e3,
        "iqr_ms": result.iqr * 1e3,
        "runs": len(result.times),
        "threads": threads,
        "batch_size": batch_size,
        "device": device.type,
    }


def compare_latency(models: dict[str, nn.Module], batch_sizes, *, device: torch.device | str = "cpu", rounds: int = 3,
                    input_size=(3, 32, 32), threads: int | None = None, min_run_time: float = 0.3,
                    input_fn=None, key_suffix: str = "") -> dict[str, dict]:
    """Latency of several models measured side by side: ``rounds`` interleaved rounds (A, B, C, A, B, C, ...)
    of ``measure_latency``, so that drift of the machine (clock, other load) hits every model alike.

    ``input_fn`` and ``key_suffix`` serve text models: ``input_fn=text_input_fn(64), key_suffix="_s64"`` times
    64-token sequences under keys such as "cpu_b32_s64".
    Returns {name: {f"{device}_b{b}{key_suffix}": {"median_ms": median over the rounds' medians, "min_ms", "max_ms"}}}.
    """
    if not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds: {rounds!r} is not allowed; use an integer >= 1")
    dev = torch.device(device).type
    seen = {name: {f"{dev}_b{b}{key_suffix}": [] for b in batch_sizes} for name in models}
    for _ in range(rounds):
        for b in batch_sizes:
            for name, m in models.items():
                r = measure_latency(m, b, device=device, input_size=input_size, threads=threads, min_run_time=min_run_time,
                                    input_fn=input_fn)
                seen[name][f"{dev}_b{b}{key_suffix}"].append(r["median_ms"])
    return {name: {k: {"median_ms": statistics.median(v), "min_ms": min(v), "max_ms": max(v)} for k, v in keys.items()}
            for name, keys in seen.items()}


def latency_medians(models: dict[str, nn.Module], batch_sizes, *, device: torch.device | str = "cpu", rounds: int = 3,
                    input_size=(3, 32, 32), min_run_time: float = 0.3, input_fn=None, key_suffix: str = "",
                    ranges: bool = False) -> dict[str, dict]:
    """The course's one latency policy, for a ledger: ``models`` timed side by side in ``rounds`` interleaved rounds
    (``compare_latency``) on the CPU at every batch size up to 64 (all of them in a CPU session) and, when ``device``
    is CUDA, on the GPU at every batch size. Returns {name: {"cpu_b64": median ms (4 decimals), "cuda_b256": ...}};
    ``ranges=True`` keeps compare_latency's {"median_ms", "min_ms", "max_ms"} per key instead."""
    dev = torch.device(device)
    out = {n: {} for n in models}
    cpu_sizes = [b for b in batch_sizes if b <= 64 or dev.type == "cpu"]
    for where, sizes in (("cpu", cpu_sizes), ("cuda", list(batch_sizes) if dev.type == "cuda" else [])):
        if sizes:
            measured = compare_latency(models, sizes, device=dev if where == "cuda" else "cpu", rounds=rounds,
                                       input_size=input_size, min_run_time=min_run_time, input_fn=input_fn,
                                       key_suffix=key_suffix)
            for n, row in measured.items():
                out[n].update(row if ranges else {k: round(r["median_ms"], 4) for k, r in row.items()})
    return out


def model_record(model: nn.Module, *, notebook: str, stage: str, name: str, accuracy: float | None,
                 dataset: str, profile: str, device: torch.device | str, seed: int,
                 latency_batch_sizes=(1, 64), input_size=(3, 32, 32), min_run_time: float = 0.3,
                 extra: dict | None = None, latency_ms: dict | None = None, macs: int | None = None,
                 input_fn=None, fields: dict | None = None, fast_gzip: bool = False, sizes: dict | None = None) -> dict:
    """One ledger-ready record (the run ledger's fields, docs/ARCHITECTURE.md) for ``model``.

    Latency is measured with the one policy, ``latency_medians`` (on the CPU for every batch size in
    ``latency_batch_sizes`` up to 64 and, when ``device`` is CUDA, on the GPU as well: keys "cpu_b1", "cuda_b256",
    ...), unless ``latency_ms`` gives those numbers already (``ImageWork.record_all`` measures several models side by
    side, in the profile's rounds). ``macs`` overrides the count (a transformer's
    attention is counted by ``textmodels.count_text_macs``), ``input_fn`` makes the inputs of a text model and
    ``fields`` adds Part 2's fields (``task``, ``perplexity``); ``sizes`` gives ``state_dict_bytes(model)`` when it
    was measured already (``ImageWork.record_all`` compresses several models side by side).
    """
    device = torch.device(device)
    sizes = sizes or state_dict_bytes(model, fast=fast_gzip)
    if latency_ms is None:  # the one policy (compare_latency), here for one model in one round
        latency = latency_medians({name: model}, latency_batch_sizes, device=device, rounds=1, input_size=input_size,
                                  min_run_time=min_run_time, input_fn=input_fn)[name]
    else:
        latency = dict(latency_ms)
    record = {
        "notebook": notebook,
        "stage": stage,
        "model": name,
        "dataset": dataset,
        "profile": profile,
        "device": device.type,
        "seed": int(seed),
        "accuracy": None if accuracy is None else float(accuracy),
        "params": count_params(model),
        "nonzero_params": count_nonzero_params(model),
        "macs": int(macs) if macs is not None else count_macs(model, input_size, input_fn),
        "size_bytes": sizes["raw"],
        "size_gzip_bytes": sizes["gzip"],
        "latency_ms": latency,
        "extra": dict(extra or {}),
    }
    record.update(fields or {})
    return record
