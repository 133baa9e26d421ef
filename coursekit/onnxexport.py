"""A PyTorch model to an ONNX file and through ONNX Runtime: export (``torch.onnx.export``'s dynamo exporter, the
batch dimension dynamic, the weights inside the file), an inference session with a fixed thread count, and ONNX
Runtime's two int8 paths: dynamic (weights int8 per channel, activations quantized per batch at run time; for
transformers) and static QDQ (activation ranges calibrated on held-out data; for CNNs). Introduced in
notebooks/12_deployment.ipynb.

Nothing is written over an existing file: every function that writes refuses a path that exists.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .files import refuse_existing
from .inference import require_eval_mode

__all__ = ["onnxruntime_available", "export_onnx", "onnx_session", "OnnxModel", "quantize_onnx_dynamic",
           "quantize_onnx_static", "onnx_weight_bytes", "onnx_file_mb"]


def onnxruntime_available() -> str | None:
    """None when onnx, onnxscript (the dynamo exporter's) and onnxruntime import, else the one-line reason."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        return f"{e.name or e} is not installed ({e}); pip install onnx onnxscript onnxruntime"
    return None


def export_onnx(model: nn.Module, example_inputs: tuple, path: str | os.PathLike, *, input_names=("x",),
                dynamic_axes: dict[int, str] | None = None) -> Path:
    """Export ``model`` (eval mode, on the CPU) to ``path`` with the dynamo exporter (``torch.export`` underneath),
    weights stored in the file (``external_data=False``: fine under ONNX's 2 GB limit). ``example_inputs``: a tuple
    of tensors, one per name in ``input_names`` (moved to the CPU: a GPU session's batches may be passed as they
    are); ``dynamic_axes`` {axis: name} of every input that may change size (default {0: "batch"}; a text model adds
    {1: "seq"}). Refuses a path that exists. Returns the path."""
    path = refuse_existing(path, "export_onnx")
    require_eval_mode(model, "export_onnx")
    if len(example_inputs) != len(input_names):
        raise ValueError(f"export_onnx: {len(example_inputs)} example inputs for input_names {list(input_names)}")
    example_inputs = tuple(t.cpu() for t in example_inputs)  # the export runs on the CPU, wherever the data was
    axes = {0: "batch"} if dynamic_axes is None else dynamic_axes
    dims = {a: torch.export.Dim(name, min=1, max=4096) for a, name in axes.items()}
    dynamic = tuple(dims for _ in input_names) if dims else None  # by position: forward's own argument names may differ
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(model, tuple(example_inputs), str(path), input_names=list(input_names), output_names=["out"],
                          dynamo=True, external_data=False, dynamic_shapes=dynamic, verbose=False)
    return path


def onnx_session(path: str | os.PathLike, threads: int):
    """An ``onnxruntime.InferenceSession`` on the CPU with ``threads`` intra-op threads (one inter-op thread), all
    graph optimisations on."""
    import onnxruntime as ort

    if not Path(path).is_file():
        raise FileNotFoundError(f"onnx_session: no ONNX file at {path}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxModel(nn.Module):
    """An ONNX Runtime session that behaves like a module for the course's evaluation and timing code:
    ``forward(*tensors)`` feeds the session (CPU tensors, made contiguous) and returns the first output as a tensor.
    ``deepcopy`` returns the same object (a session is immutable and cannot be copied); ``.to()`` and ``.eval()``
    change nothing."""

    def __init__(self, path: str | os.PathLike, threads: int):
        super().__init__()
        self.path = Path(path)
        self.session = onnx_session(path, threads)
        self.input_names = [i.name for i in self.session.get_inputs()]

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        feed = {n: np.ascontiguousarray(t.detach().cpu().numpy()) for n, t in zip(self.input_names, inputs, strict=True)}
        return torch.from_numpy(self.session.run(None, feed)[0])

    def __deepcopy__(self, memo):
        return self


def _preprocessed(src: Path, tmp: str) -> Path:
    """ONNX Runtime's recommended pre-processing before quantization (shape inference, graph optimisation)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = Path(tmp) / "preprocessed.onnx"
    quant_pre_process(str(src), str(out), skip_symbolic_shape=True)
    return out


def quantize_onnx_dynamic(src: str | os.PathLike, dst: str | os.PathLike, *, per_channel: bool = True) -> Path:
    """ONNX Runtime dynamic int8: every operator it supports (MatMul weights int8 per output channel when
    ``per_channel``, activations quantized per call from their observed range; the embedding tables' Gather as int8
    too) by ``quantize_dynamic`` after ``quant_pre_process``. Refuses an existing ``dst``. Returns ``dst``."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    dst = refuse_existing(dst, "quantize_onnx_dynamic")
    with tempfile.TemporaryDirectory() as tmp:
        quantize_dynamic(str(_preprocessed(Path(src), tmp)), str(dst), weight_type=QuantType.QInt8,
                         per_channel=per_channel)
    return dst


class _BatchReader:
    """onnxruntime's CalibrationDataReader protocol over a list of input arrays."""

    def __init__(self, name: str, arrays: list):
        self.name, self.arrays = name, iter(arrays)

    def get_next(self):
        x = next(self.arrays, None)
        return None if x is None else {self.name: x}


def quantize_onnx_static(src: str | os.PathLike, dst: str | os.PathLike, calibration: list[torch.Tensor], *,
                         input_name: str = "x") -> Path:
    """ONNX Runtime static int8 in QDQ format: weights int8 symmetric per output channel, activations uint8 per
    tensor with min/max ranges from ``calibration`` (a list of input batches from held-out training data). Refuses
    an empty calibration list and an existing ``dst``. Returns ``dst``."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if not calibration:
        raise ValueError("quantize_onnx_static: calibration is empty; give at least one batch of held-out inputs")
    dst = refuse_existing(dst, "quantize_onnx_static")
    arrays = [np.ascontiguousarray(x.detach().cpu().float().numpy()) for x in calibration]
    with tempfile.TemporaryDirectory() as tmp:
        quantize_static(str(_preprocessed(Path(src), tmp)), str(dst), _BatchReader(input_name, arrays),
                        quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax)
    return dst


def onnx_weight_bytes(path: str | os.PathLike) -> int:
    """Bytes of every initializer of the ONNX file at ``path`` (weights, biases, scales and zero points as they are
    stored: int8 weights one byte each, int32 biases four): the weights a device must hold, without the graph."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    return sum(numpy_helper.to_array(t).nbytes for t in graph.initializer)


def onnx_file_mb(path: str | os.PathLike) -> float:
    """The file's size in MB (10^6 bytes)."""
    return Path(path).stat().st_size / 1e6
