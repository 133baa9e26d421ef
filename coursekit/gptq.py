"""GPTQ (Frantar, Ashkboos, Hoefler, Alistarh 2023, "GPTQ: accurate post-training quantization for generative
pre-trained transformers"), from scratch. Introduced in notebooks/11_quantization.ipynb.

Round-to-nearest rounds every weight on its own. GPTQ rounds the columns of a weight W (out, in) one at a time and,
after each, moves the rounding error onto the columns not yet rounded, in the direction that keeps the layer's output
on the calibration inputs X (tokens, in) closest: it minimises ||W X^T - W_hat X^T||^2, whose Hessian in each row of
W is H = 2 X^T X (the same for every row). Rounding column q costs (w_q - Q(w_q))^2 / [H_F^-1]_qq, and the optimal
update of the remaining columns F is delta_F = -(w_q - Q(w_q)) / [H_F^-1]_qq * (H_F^-1)_{:,q} (Optimal Brain
Surgeon's update, Hassibi and Stork 1993, used for rounding by Optimal Brain Quantization, Frantar and Alistarh
2022, here applied to every row at once); then q leaves F.

The paper's three steps that make this fast, all kept here:
1. one fixed column order (left to right) for every row, so H_F^-1 is shared by all rows;
2. the successive inverses H_F^-1 are the rows of the upper Cholesky factor of H^-1 (divided by their diagonal),
   computed once; H is dampened first by ``damp`` x mean(diag H) on the diagonal (the paper's 1%);
3. lazy batch updates: inside a block of ``block_size`` columns the error is moved within the block only; the block's
   errors are applied to all later columns in one matrix product.
Groups (``group_size``): each group's scale and zero point are taken, as in the paper's reference code, when its
first column is reached, from the group's weights as updated so far. A column whose input is always zero (H_qq = 0)
gets H_qq = 1 and weight 0, as the reference code does. Here the block is a multiple of the group (so each group's
grid is taken from its fully updated weights; the reference code takes it from weights that miss the updates of
the current block, which is the same when the group size is the block size, its usual setting).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import nn

from .quantize import QTensor, validate_quant_args
from .quantize import quantize as round_to_nearest
from .validate import integer, number
from .weightquant import QuantizedLinear, output_error, quantizable_linears, record_linear_inputs, validate_layers

__all__ = ["GPTQ_DAMP", "GPTQ_BLOCK", "inverse_hessian_rows", "gptq_quantize", "gptq_linears", "output_error"]

GPTQ_DAMP = 0.01  # the paper's dampening: 1% of the mean diagonal of H
GPTQ_BLOCK = 128  # the paper's lazy-batch block (columns)


def inverse_hessian_rows(gram: torch.Tensor, damp: float = GPTQ_DAMP) -> tuple[torch.Tensor, torch.Tensor]:
    """(U, dead): U (in, in) the upper Cholesky factor of H^-1, H = gram + damp mean(diag gram) I, whose row q divided
    by U_qq is row q of the inverse Hessian of the columns not yet rounded when q is reached; dead (in,) bool marks
    columns whose input was always zero (given H_qq = 1 first). Computed with one Cholesky factorisation and one
    triangular inverse: with J the reversal of the columns, J H J = L L^T gives H = R R^T for the upper R = J L J, so
    H^-1 = R^-T R^-1 and U = R^-1 = J L^-1 J (the reference code's cholesky, cholesky_inverse, cholesky gives the same U
    in three factorisations). Float64: H is nearly singular when the calibration tokens are few."""
    h = gram.detach().double().clone()
    dead = torch.diagonal(h) == 0
    h[dead, dead] = 1
    h.diagonal().add_(damp * torch.diagonal(h).mean())
    low = torch.linalg.cholesky(h.flip(0, 1))
    eye = torch.eye(h.shape[0], dtype=h.dtype)
    u = torch.linalg.solve_triangular(low, eye, upper=False).flip(0, 1)
    return u.float(), dead


@torch.no_grad()
def gptq_quantize(weight: torch.Tensor, gram: torch.Tensor, *, bits: int, group_size: int | None = None,
                  symmetric: bool = False, block_size: int = GPTQ_BLOCK, damp: float = GPTQ_DAMP) -> QTensor:
    """GPTQ's codes for ``weight`` (out, in) given the Gram matrix ``gram`` = X^T X (in, in) of its calibration
    inputs: a QTensor per output channel (``group_size`` None) or per group of ``group_size`` input features, in the
    form ``quantize`` returns (integer zero points when asymmetric), so that ``QuantizedLinear.from_codes`` stores it.
    ``block_size`` is rounded up to a multiple of the group size."""
    out_f, in_f = weight.shape
    granularity = "group" if group_size else "channel"
    validate_quant_args(bits, granularity, group_size, in_f)
    integer("block_size", block_size, lo=1)
    number("damp", damp, lo=0, lo_open=True)
    if tuple(gram.shape) != (in_f, in_f):
        raise ValueError(f"gram: shape {tuple(gram.shape)} does not match the weight's {in_f} input features")
    gs = group_size or in_f
    block = gs * -(-block_size // gs) if group_size else block_size
    qmin, qmax = (-(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1) if symmetric else (0, 2 ** bits - 1)
    u, dead = inverse_hessian_rows(gram, damp)
    w = weight.detach().float().t().contiguous()  # (in, out): column q of W is row q here, contiguous
    w[dead] = 0
    codes = torch.zeros_like(w)
    ng = in_f // gs
    scale, zero = torch.zeros(ng, out_f), torch.zeros(ng, out_f)
    for b0 in range(0, in_f, block):
        b1 = min(b0 + block, in_f)
        wb, err = w[b0:b1].clone(), torch.zeros(b1 - b0, out_f)
        for i in range(b1 - b0):
            col = b0 + i
            if col % gs == 0:  # a new group: its grid from its weights as updated so far
                g = col // gs
                grid = round_to_nearest((wb[i:i + gs] if group_size else w).t(), bits, symmetric=symmetric)
                scale[g], zero[g] = grid.scale.reshape(-1), grid.zero.reshape(-1)
                s_g, z_g, inv_s = scale[g], zero[g], 1 / scale[g]
            q = torch.round(wb[i] * inv_s).add_(z_g).clamp_(qmin, qmax)  # round to nearest on the group's grid
            codes[col] = q
            e = (wb[i] - (q - z_g) * s_g).div_(u[col, col])
            wb[i:].addr_(u[col, col:b1], e, alpha=-1)  # the error moved onto the block's later columns
            err[i] = e
        w[b1:].addmm_(u[b0:b1, b1:].t(), err, alpha=-1)  # ... and, once per block, onto all later columns
    return QTensor(codes.t().to(torch.int8 if symmetric else torch.uint8), scale.t()[..., None],
                   zero.t()[..., None], bits, symmetric, granularity, group_size, (out_f, in_f))


def _same_hessian(layers: dict, stats: dict) -> list[list[str]]:
    """The layers' names grouped by equal Gram matrices (in a decoder: queries, keys and values read one input,
    gate and up another), in the layers' order."""
    groups = []
    for name in layers:
        for names in groups:
            if torch.equal(stats[names[0]]["gram"], stats[name]["gram"]):
                names.append(name)
                break
        else:
            groups.append([name])
    return groups


@torch.no_grad()
def gptq_linears(module: nn.Module, feed: Callable[[], object], *, bits: int, group_size: int | None = None,
                 symmetric: bool = False, skip=("lm_head",), block_size: int = GPTQ_BLOCK,
                 damp: float = GPTQ_DAMP) -> dict:
    """GPTQ on every nn.Linear of ``module`` (names containing an entry of ``skip`` left out), in place: ``feed()``
    runs ``module`` over the calibration inputs once while hooks add up each linear's X^T X; then each linear is
    replaced by a QuantizedLinear holding its GPTQ codes. Linears with the same X^T X (they read the same input) are
    quantized in one run on their stacked rows, which gives each the codes it would get alone. Every layer is checked
    before any work. Returns {"layers", "weights", "stored_bytes", "float_bytes"} as
    ``weightquant.quantize_linears`` does, and "tokens"."""
    layers = quantizable_linears(module, skip)
    if not layers:
        raise ValueError(f"gptq_linears: no nn.Linear to quantize in the module (skip={skip!r})")
    validate_layers(layers, bits, "group" if group_size else "channel", group_size)
    stats, handles = record_linear_inputs(layers)
    try:
        feed()
    finally:
        for h in handles:
            h.remove()
    never = [n for n, s in stats.items() if s["tokens"] == 0]
    if never:  # a layer with no calibration input would get X^T X = 0: every column "dead", every weight zeroed
        raise ValueError(f"gptq_linears: the calibration feed never ran {', '.join(never)} (zero batches); give it "
                         f"at least one batch of inputs that passes through every layer")
    tokens = {s["tokens"] for s in stats.values()}
    weights = stored = 0
    for names in _same_hessian(layers, stats):  # one GPTQ run on their stacked rows: rows never interact
        w = torch.cat([layers[n].weight.detach().float().cpu() for n in names])
        qt = gptq_quantize(w, stats[names[0]]["gram"], bits=bits, group_size=group_size, symmetric=symmetric,
                           block_size=block_size, damp=damp)
        first = 0
        for n in names:
            lin = layers[n]
            rows = slice(first, first + lin.out_features)
            first += lin.out_features
            part = dataclasses.replace(qt, q=qt.q[rows], scale=qt.scale[rows], zero=qt.zero[rows],
                                       shape=(lin.out_features, lin.in_features))
            q = QuantizedLinear.from_codes(lin, part).to(lin.weight.device)
            module.set_submodule(n, q)
            weights, stored = weights + q.weight_numel, stored + q.stored_bytes
    return {"layers": len(layers), "weights": weights, "stored_bytes": stored, "float_bytes": 4 * weights,
            "tokens": max(tokens)}
