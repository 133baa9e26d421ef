"""A Hugging Face Llama-architecture model (SmolLM2, possibly with layers removed) written to a GGUF file that
llama.cpp runs: the tokenizer and every setting copied from a template GGUF (the model's own file), the layer count
and the tensors from the model, each weight matrix stored in a GGUF type (F32, F16, Q8_0, Q4_1, ...) with the
``gguf`` package's reference quantizers. Introduced in notebooks/12_deployment.ipynb.

Two conventions of llama.cpp's converter (``convert_hf_to_gguf.py``) are reproduced: GGUF's tensor names
(``blk.{i}.attn_q.weight``, ...), and the query and key rows permuted from Hugging Face's rotary layout (the two
halves of each head) to llama.cpp's (interleaved pairs); transformers undoes that permutation when it reads a GGUF.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .files import refuse_existing
from .validate import one_of

__all__ = ["GGUF_TYPES", "gguf_tensor_name", "permute_for_gguf", "write_llama_gguf", "gguf_tensor_summary"]

GGUF_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_1", "Q4_0")
_LAYER_NAMES = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
                "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
                "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}


def gguf_tensor_name(hf_name: str) -> str | None:
    """GGUF's name for a Hugging Face Llama parameter ("model.layers.3.mlp.up_proj.weight" -> "blk.3.ffn_up.weight");
    None for ``lm_head.weight`` (tied to the embedding in SmolLM2: GGUF stores it once)."""
    if hf_name == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf_name == "model.norm.weight":
        return "output_norm.weight"
    if hf_name == "lm_head.weight":
        return None
    parts = hf_name.split(".")
    if parts[:2] == ["model", "layers"]:
        inner = ".".join(parts[3:-1])
        if inner in _LAYER_NAMES:
            return f"blk.{parts[2]}.{_LAYER_NAMES[inner]}.{parts[-1]}"
    raise ValueError(f"gguf_tensor_name: {hf_name!r} is not a Llama parameter this writer knows")


def permute_for_gguf(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Rows of a query or key projection (n_heads * head_dim, in) from Hugging Face's rotary layout (each head's
    first half, then its second half) to llama.cpp's (pairs interleaved): reshape (heads, 2, head_dim / 2, in),
    swap the two middle axes, reshape back."""
    rows = weight.shape[0]
    if rows % (2 * n_heads):
        raise ValueError(f"permute_for_gguf: {rows} rows do not split into {n_heads} heads of an even size")
    return weight.reshape(n_heads, 2, rows // n_heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


_SHAPE_KEYS = {"llama.block_count", "llama.context_length", "llama.embedding_length", "llama.feed_forward_length",
               "llama.attention.head_count", "llama.attention.head_count_kv", "llama.rope.freq_base",
               "llama.attention.layer_norm_rms_epsilon", "llama.vocab_size", "llama.rope.dimension_count"}


def _add_shape_fields(writer, cfg) -> None:
    """The model's own sizes (never the template's): layers, widths, heads, rotary settings, vocabulary."""
    rope = getattr(cfg, "rope_parameters", None) or {}
    theta = rope.get("rope_theta", getattr(cfg, "rope_theta", None))
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_rope_freq_base(float(theta))
    writer.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))
    writer.add_vocab_size(cfg.vocab_size)
    writer.add_rope_dimension_count(head_dim)


def _copy_fields(reader, writer, skip: set[str]) -> None:
    """Every key-value field of the template except GGUF's own header fields and ``skip``."""
    import gguf

    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key in skip or key == "general.architecture":
            continue
        vtype = field.types[0]
        value = field.contents()
        if vtype == gguf.GGUFValueType.ARRAY:
            writer.add_key_value(key, value, vtype, sub_type=field.types[-1])
        else:
            writer.add_key_value(key, value, vtype)


def write_llama_gguf(model: nn.Module, template: str | os.PathLike, path: str | os.PathLike, *,
                     weight_type: str = "Q8_0") -> Path:
    """Write ``model`` (a transformers LlamaForCausalLM, any number of layers) to ``path`` as GGUF.

    template: a GGUF file of the same model family (its tokenizer and chat template are copied; the layer count,
    widths, heads and rotary settings are the model's own). Two-dimensional weights are stored as ``weight_type``
    (one of GGUF_TYPES; the token embedding too), norms as F32. A quantized type needs rows whose length divides into its blocks (32).
    Refuses an existing ``path``. Returns the path."""
    import gguf

    one_of("weight_type", weight_type, GGUF_TYPES)
    path = refuse_existing(path, "write_llama_gguf")
    cfg = model.config
    reader = gguf.GGUFReader(str(template))
    arch = str(reader.fields["general.architecture"].contents())
    if arch != "llama" or cfg.model_type != "llama":
        raise ValueError(f"write_llama_gguf: template architecture {arch!r}, model {cfg.model_type!r}; both must be llama")
    writer = gguf.GGUFWriter(str(path), arch)
    _copy_fields(reader, writer, skip={"general.file_type", "general.quantization_version", *_SHAPE_KEYS})
    _add_shape_fields(writer, cfg)
    qtype = gguf.GGMLQuantizationType[weight_type]
    for name, tensor in model.state_dict().items():
        out = gguf_tensor_name(name)
        if out is None:
            continue
        w = tensor.detach().float().cpu()
        if out.endswith("attn_q.weight"):
            w = permute_for_gguf(w, cfg.num_attention_heads)
        elif out.endswith("attn_k.weight"):
            w = permute_for_gguf(w, cfg.num_key_value_heads)
        array = w.numpy().astype(np.float32)
        if array.ndim == 1:  # norms stay float32, as llama.cpp's converter keeps them
            writer.add_tensor(out, array)
        elif qtype == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(out, array)
        elif qtype == gguf.GGMLQuantizationType.F16:
            writer.add_tensor(out, array.astype(np.float16))
        else:
            writer.add_tensor(out, gguf.quants.quantize(array, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def gguf_tensor_summary(path: str | os.PathLike) -> dict:
    """{"layers": block count, "types": {GGUF type: tensors}, "bytes": tensor bytes, "file_bytes": file size} of a
    GGUF file."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    types: dict[str, int] = {}
    for t in reader.tensors:
        types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + 1
    return {"layers": int(reader.fields["llama.block_count"].contents()), "types": types,
            "bytes": int(sum(int(t.n_bytes) for t in reader.tensors)), "file_bytes": Path(path).stat().st_size}
