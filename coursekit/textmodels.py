"""A pretrained encoder with a classification head, its anatomy, and checkpoints that rebuild it.

``TextClassifier`` wraps a Hugging Face encoder (all-MiniLM-L6-v2, a ``BertModel``) and adds a pooling step
and a linear head. It takes token ids only, ``(N, L) -> (N, C)`` logits, and derives the attention mask from
the padding id, so Part 1's ``fit``, ``evaluate`` and ``kd_loss_fn`` train it unchanged.

Pooling (the checkpoint decides which is right):
* "mean": the mean of the last hidden states over real tokens (padding excluded). all-MiniLM-L6-v2 was
  trained this way (sentence-transformers), so its mean-pooled features are its sentence embedding.
* "cls_pooler": BERT's pooler, tanh(W h_[CLS] + b), what ``AutoModelForSequenceClassification`` uses; this
  checkpoint's pooler was never trained by sentence-transformers.
* "cls": the raw [CLS] hidden state.

Introduced in notebooks/07_transformer_transfer.ipynb; students (fewer layers) in 08.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import torch
from torch import nn

from .env import autocast_context, autocast_dtype
from .files import save_torch_atomic
from .metrics import count_macs, torch_benchmark
from .modelcache import train_or_load_cached
from .textprune import layer_shapes, reshape_layers
from .validate import integer

__all__ = ["POOLINGS", "TextClassifier", "masked_mean", "parameters_by_part", "keep_layers", "alternate_layers",
           "save_text_model", "load_text_model", "text_input_fn", "count_text_macs", "time_layer_parts",
           "train_or_load_text", "encoder_features"]

POOLINGS = ("mean", "cls_pooler", "cls")


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the real tokens: hidden (N, L, H), mask (N, L) of 0/1 -> (N, H). Padding contributes nothing."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1)


class TextClassifier(nn.Module):
    """``encoder`` (a transformers encoder such as BertModel) + pooling + dropout + ``nn.Linear(hidden, num_classes)``.

    forward(input_ids (N, L) long) -> logits (N, num_classes); attention mask = input_ids != pad_id.
    """

    def __init__(self, encoder: nn.Module, num_classes: int, *, pooling: str = "mean", pad_id: int = 0,
                 dropout: float = 0.1):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling: {pooling!r} is not allowed; use {', '.join(POOLINGS)}")
        integer("num_classes", num_classes, lo=2)
        if pooling == "cls_pooler" and getattr(encoder, "pooler", None) is None:
            raise ValueError("pooling: 'cls_pooler' needs an encoder with a pooler layer")
        self.encoder = encoder
        self.pooling, self.pad_id, self.num_classes = pooling, int(pad_id), num_classes
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(encoder.config.hidden_size, num_classes)

    def encode(self, input_ids: torch.Tensor, output_hidden_states: bool = False):
        """Run the encoder: returns (pooled (N, H), attention mask (N, L), hidden states or None).

        hidden states (when asked): a tuple of num_layers + 1 tensors (N, L, H), the embeddings first."""
        mask = input_ids.ne(self.pad_id).long()
        out = self.encoder(input_ids=input_ids, attention_mask=mask, output_hidden_states=output_hidden_states)
        if self.pooling == "mean":
            pooled = masked_mean(out.last_hidden_state, mask)
        elif self.pooling == "cls_pooler":
            pooled = out.pooler_output
        else:
            pooled = out.last_hidden_state[:, 0]
        return pooled, mask, out.hidden_states if output_hidden_states else None

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        pooled, _, _ = self.encode(input_ids)
        return self.head(self.dropout(pooled))

    def forward_with_hidden(self, input_ids: torch.Tensor):
        """(logits (N, C), hidden states tuple of (N, L, H), attention mask (N, L)): for hidden-state distillation."""
        pooled, mask, hidden = self.encode(input_ids, output_hidden_states=True)
        return self.head(self.dropout(pooled)), hidden, mask

    @property
    def num_layers(self) -> int:
        return len(self.encoder.encoder.layer)


def text_input_fn(seq_len: int, vocab_size: int = 30522):
    """``input_fn(batch_size) -> (batch_size, seq_len)`` token ids without padding, for MACs and latency at a
    stated sequence length (ids drawn from the vocabulary's ordinary range by a seeded generator; their values
    do not change the cost)."""
    low, high = min(1000, vocab_size // 2), min(2000, vocab_size)

    def make(batch_size: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(0)
        return torch.randint(low, high, (batch_size, seq_len), generator=g)
    return make


def parameters_by_part(model: nn.Module) -> dict[str, int]:
    """Parameters of a BERT-style TextClassifier (or bare encoder) by part: "embeddings" (token, position,
    type, their LayerNorm), "attention" (Q, K, V, output projection, LayerNorm), "ffn" (intermediate and output
    dense, LayerNorm), "pooler", "head". The parts add up to all parameters."""
    parts = {"embeddings": 0, "attention": 0, "ffn": 0, "pooler": 0, "head": 0}
    for name, p in model.named_parameters():
        if ".embeddings." in f".{name}":
            key = "embeddings"
        elif ".attention." in name:
            key = "attention"
        elif ".intermediate." in name or ".output." in name:
            key = "ffn"
        elif "pooler" in name:
            key = "pooler"
        elif name.startswith("head."):
            key = "head"
        else:
            raise ValueError(f"parameters_by_part: no part for parameter {name!r}")
        parts[key] += p.numel()
    return parts


def alternate_layers(num_layers: int, keep: int) -> list[int]:
    """Indices of ``keep`` of ``num_layers`` layers spread evenly from the first: 6 -> 3 gives [0, 2, 4]
    (DistilBERT's every-other-layer initialisation, Sanh et al. 2019)."""
    integer("student_layers", keep, lo=1, hi=num_layers,
            allowed=f"an integer from 1 to {num_layers} (the teacher has {num_layers} layers)")
    return [i * num_layers // keep for i in range(keep)]


def keep_layers(model: TextClassifier, layers: list[int]) -> TextClassifier:
    """A copy of ``model`` whose encoder keeps only the transformer layers at indices ``layers`` (in order):
    embeddings, pooler and head are copied as they are. The config's num_hidden_layers follows."""
    n = model.num_layers
    if not layers or len(set(layers)) != len(layers) or any(not 0 <= i < n for i in layers):
        raise ValueError(f"layers: {layers!r} is not allowed; use distinct indices from 0 to {n - 1}")
    student = copy.deepcopy(model)
    student.encoder.encoder.layer = nn.ModuleList([student.encoder.encoder.layer[i] for i in layers])
    student.encoder.config.num_hidden_layers = len(layers)
    return student


def save_text_model(path: str | os.PathLike, model: TextClassifier, metrics: dict | None = None) -> Path:
    """Save a TextClassifier with what rebuilds it: the encoder's config (layer count included), each layer's
    head count and FFN width (``textprune.layer_shapes``: a pruned model's layers differ from the config and from
    each other), pooling, pad id, number of classes and the state dict. Loads with
    ``torch.load(weights_only=True)``."""
    payload = {"encoder_config": model.encoder.config.to_dict(), "layer_shapes": layer_shapes(model),
               "num_classes": model.num_classes,
               "pooling": model.pooling, "pad_id": model.pad_id, "metrics": dict(metrics or {}),
               "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}}
    return save_torch_atomic(payload, path)


def load_text_model(path: str | os.PathLike, device: torch.device | str = "cpu",
                    attn_implementation: str | None = None) -> tuple[TextClassifier, dict]:
    """Rebuild the TextClassifier saved by ``save_text_model`` (weights_only=True): the encoder from its config
    (attention kernel ``attn_implementation``, "eager" or "sdpa"; None: transformers' default), each layer reshaped
    to its saved head count and FFN width, then the weights. Returns (model in eval mode, metrics)."""
    from transformers import AutoConfig, AutoModel

    payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    cfg = dict(payload["encoder_config"])
    config = AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    encoder = AutoModel.from_config(config, **({"attn_implementation": attn_implementation}
                                               if attn_implementation else {}))
    model = TextClassifier(encoder, payload["num_classes"], pooling=payload["pooling"], pad_id=payload["pad_id"])
    shapes = payload.get("layer_shapes")
    if shapes is not None and shapes != layer_shapes(model):
        reshape_layers(model, shapes)
    model.load_state_dict(payload["state_dict"])
    return model.to(device).eval(), payload["metrics"]


def count_text_macs(model: nn.Module, seq_len: int) -> int:
    """Multiply-accumulates of ``model`` (a TextClassifier) for one sequence of ``seq_len`` tokens, attention
    scores included: counted on a copy switched to eager attention, since FlopCounterMode does not see the CPU's
    fused scaled-dot-product kernel (it would count only the linear layers)."""

    m = copy.deepcopy(model).float()
    m.encoder.set_attn_implementation("eager")
    return count_macs(m, input_fn=text_input_fn(seq_len, m.encoder.config.vocab_size))


@torch.inference_mode()
def time_layer_parts(layer: nn.Module, batch_size: int, seq_len: int, *, min_run_time: float = 0.2,
                     rounds: int = 3) -> dict[str, dict]:
    """Where one BERT layer spends its time on this machine: each part run alone on a (batch, seq_len, H) input
    (float32, no padding), timed with torch.utils.benchmark in ``rounds`` interleaved rounds, beside its MACs.

    Parts: "Q, K, V projections"; "attention: softmax(QK^T/sqrt(d)) V" (scaled_dot_product_attention, the kernel
    the model uses); "output projection + LayerNorm"; "FFN: W_1, GELU, W_2 + LayerNorm"; and "whole layer".
    Returns {part: {"median_ms", "macs"}} (MACs for the batch; the whole layer's MACs are the parts' sum).
    """
    import statistics

    benchmark = torch_benchmark()

    att = layer.attention
    h, d = att.self.num_attention_heads, att.self.attention_head_size
    hidden, ffn = layer.intermediate.dense.in_features, layer.intermediate.dense.out_features
    dev = att.self.query.weight.device
    x = torch.randn(batch_size, seq_len, hidden, device=dev)
    q = att.self.query(x).view(batch_size, seq_len, h, d).transpose(1, 2).contiguous()
    ctx = torch.randn(batch_size, seq_len, h * d, device=dev)
    sdpa = nn.functional.scaled_dot_product_attention
    parts = {
        "Q, K, V projections": (lambda: (att.self.query(x), att.self.key(x), att.self.value(x)),
                                3 * hidden * h * d),
        "attention: softmax(QK^T/sqrt(d)) V": (lambda: sdpa(q, q, q), 2 * seq_len * h * d),
        "output projection + LayerNorm": (lambda: att.output(ctx, x), h * d * hidden),
        "FFN: W_1, GELU, W_2 + LayerNorm": (lambda: layer.output(layer.intermediate(x), x), 2 * hidden * ffn),
        "whole layer": (lambda: layer(x), 0),
    }
    layer.eval()
    times: dict[str, list[float]] = {p: [] for p in parts}
    for _ in range(rounds):
        for name, (fn, _) in parts.items():
            fn()
            t = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
            times[name].append(t.blocked_autorange(min_run_time=min_run_time).median * 1e3)
    per_token = {p: m for p, (_, m) in parts.items()}
    per_token["whole layer"] = sum(v for p, v in per_token.items() if p != "whole layer")
    return {p: {"median_ms": statistics.median(times[p]), "macs": per_token[p] * batch_size * seq_len} for p in parts}


def train_or_load_text(run_dir: str | os.PathLike, name: str, recipe, build, train_batches, *, device="cpu",
                       progress: bool = False, attn_implementation: str | None = None
                       ) -> tuple[TextClassifier, dict, bool]:
    """Reuse the TextClassifier trained with ``recipe`` in ``<run_dir>/checkpoints/<name>-<recipe.key()>.pt`` (loaded
    with ``attn_implementation``), or build it (``build()`` returns the untrained model), train it with
    ``recipe.fit`` and save it.

    Returns (model in eval mode, {"recipe", "history"}, reused flag). A checkpoint trained under another recipe
    has another key and is never picked up.
    """

    def trained():
        model = build().to(device)
        history = recipe.fit(model, train_batches, device=device, progress=progress)
        return model.eval(), {"recipe": recipe.as_dict(), "history": history}

    return train_or_load_cached(run_dir, name, recipe.key(), train=trained, save=save_text_model,
                                load=lambda path: load_text_model(path, device, attn_implementation))


@torch.no_grad()  # not inference_mode: the features train a probe afterwards
def encoder_features(encoder: nn.Module, batches, pad_id: int, amp: str = "auto") -> tuple[dict, torch.Tensor]:
    """Frozen-encoder sentence features under every pooling, from one pass: ({"mean", "cls_pooler", "cls"}: (N, H)
    float32, labels (N,)), in the order of ``batches``. For linear probes (``coursekit.transfer.linear_probe``)."""

    encoder.eval()
    device = next(encoder.parameters()).device
    dtype = autocast_dtype(device, amp)
    feats = {p: [] for p in POOLINGS}
    ys = []
    for x, y in batches:
        mask = x.ne(pad_id).long()
        with autocast_context(device, dtype):
            out = encoder(input_ids=x, attention_mask=mask)
        feats["mean"].append(masked_mean(out.last_hidden_state.float(), mask))
        feats["cls_pooler"].append(out.pooler_output.float())
        feats["cls"].append(out.last_hidden_state[:, 0].float())
        ys.append(y)
    return {p: torch.cat(v) for p, v in feats.items()}, torch.cat(ys)
