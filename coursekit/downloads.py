"""Datasets fetched once into the data dir when they are absent, in the files the loaders read.

Every route follows the same rules as torchvision's CIFAR-10 download: the files are written into
``<data dir>/<folder>/`` in the local format (the format of ``../shared/datasets``), a folder is published whole
(written beside it, then renamed: a reader never sees half a copy), nothing that exists is overwritten, and a
partial copy is never completed from another source. A failure raises one error naming the folder and the source.

Sources (``../shared/datasets/README.md`` gives the same ones):

* WikiText-2, tokenised v1 (Merity et al. 2016): the Hugging Face hub's ``Salesforce/wikitext``, config
  ``wikitext-2-v1`` (``datasets``), whose rows are the original file's lines with the blank lines (" ") emptied;
  the lines are joined back into ``valid.txt`` and ``test.txt``, byte for byte the original files.
* Tiny Shakespeare (Karpathy): the raw ``input.txt`` of the char-rnn repository, checked against its SHA-256.
* Free Spoken Digit Dataset (Jackson et al., v1.0.10): the repository's tagged release archive; its ``recordings/``
  and ``metadata.py`` (as ``speakers.json``), checked against the SHA-256 over file names and bytes.

SST-2 and TREC come through ``coursekit.textdata.download_text_task`` (the hub, with ``datasets``), which publishes
its files with ``publish_files`` too; CIFAR-10 comes through torchvision's own download (``coursekit.data``).
"""

from __future__ import annotations

import ast
import hashlib
import io
import json
import os
import shutil
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .paths import default_data_dir

__all__ = ["publish_files", "fetch_bytes", "ensure_folder", "data_dir_advice", "corpus_folder",
           "fsdd_folder", "CORPUS_SOURCES", "download_corpus", "FSDD_URL", "FSDD_SHA256", "FSDD_FILES",
           "FSDD_SPEAKERS", "download_fsdd", "fsdd_checksum"]


def publish_files(root: str | os.PathLike, files: dict[str, bytes]) -> Path:
    """Write ``files`` ({path relative to root: bytes}) into ``root``. A new folder is written beside ``root`` and
    renamed into place in one step; into an existing folder each file is written beside its name and renamed.
    Raises FileExistsError (nothing written) when any of the files exists already. Returns ``root``."""
    root = Path(root)
    existing = sorted(name for name in files if (root / name).exists())
    if existing:
        raise FileExistsError(f"{', '.join(existing[:3])}{' ...' if len(existing) > 3 else ''} already in {root}; "
                              "not overwritten")
    if not root.exists():
        root.parent.mkdir(parents=True, exist_ok=True)
        tmp = root.with_name(f".{root.name}.part{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            for name, blob in files.items():
                (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                (tmp / name).write_bytes(blob)
            os.rename(tmp, root)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return root
    for name, blob in files.items():
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(f".{target.name}.part{os.getpid()}")
        part.write_bytes(blob)
        os.replace(part, target)
    return root


def data_dir_advice(folder: str) -> str:
    """The one line every missing-data error ends with."""
    return (f"Point data_dir or the COURSEKIT_DATA environment variable at a folder that holds {folder}/ "
            "(for example: export COURSEKIT_DATA=../shared/datasets)")


def ensure_folder(root: Path, names, fetch, source: str) -> Path:
    """``root`` when every file of ``names`` is in it; when none is, ``fetch()`` writes them (the folder's download
    route) and ``root`` is returned. Raises FileNotFoundError naming the folder, the missing files and ``source``
    when some are missing (a partial copy is never completed from another source) or the fetch fails (no network,
    no ``datasets`` package, a read-only data dir, a download that fails its checksum)."""
    names = list(names)
    missing = [n for n in names if not (root / n).is_file()]
    if not missing:
        return root
    shown = f"{', '.join(missing[:3])}{f' and {len(missing) - 3} more' if len(missing) > 3 else ''}"
    if len(missing) < len(names):
        raise FileNotFoundError(f"{root.name}: {shown} not found in {root} (a partial copy is not completed from "
                                f"{source}). {data_dir_advice(root.name)}")
    try:
        fetch()
    except (ImportError, OSError, ConnectionError, ValueError) as err:  # no network / package / write access, bad file
        raise FileNotFoundError(f"{root.name}: {shown} not found in {root}, and fetching {source} failed "
                                f"({type(err).__name__}: {err}). {data_dir_advice(root.name)}") from err
    return root


def fetch_bytes(url: str, timeout: float = 60.0) -> bytes:
    """The bytes at ``url`` (http(s) or file://), with urllib; URLError / OSError when it cannot be read."""
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (the URLs are the course's own)
        return response.read()


def _check_sha256(blob: bytes, want: str, what: str, source: str) -> None:
    got = hashlib.sha256(blob).hexdigest()
    if got != want:
        raise ValueError(f"{what}: the file from {source} has SHA-256 {got[:16]}..., expected {want[:16]}...; "
                         "not written (a changed or truncated download)")


# ----------------------------------------------------------------------------- text corpora (chapter 10)

@dataclass(frozen=True)
class HubText:
    """Files made from a hub dataset's ``text`` column: {file name: split}, rows joined (empty rows were " \\n")."""

    hub_id: str
    config: str | None
    files: dict


@dataclass(frozen=True)
class UrlFile:
    """One file at a URL, checked against its SHA-256."""

    url: str
    file: str
    sha256: str


CORPUS_SOURCES = {
    "wikitext2": HubText("Salesforce/wikitext", "wikitext-2-v1", {"valid.txt": "validation", "test.txt": "test"}),
    "tinyshakespeare": UrlFile("https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
                               "input.txt", "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"),
}


def _source_name(spec) -> str:
    return f"{spec.hub_id} ({spec.config})" if isinstance(spec, HubText) else spec.url


def download_corpus(folder: str, data_dir: str | os.PathLike | None = None, *, source: str | None = None) -> Path:
    """Fetch the corpus folder ``folder`` (a key of CORPUS_SOURCES) into ``<data dir>/<folder>/``. ``source``
    replaces the hub id or the URL (a local folder laid out like the hub's repository, a file:// URL: the tests
    plant one). Every file of the folder is fetched before any is written. Returns the folder."""
    if folder not in CORPUS_SOURCES:
        raise ValueError(f"corpus folder: {folder!r} is not allowed; use {', '.join(CORPUS_SOURCES)}")
    spec = CORPUS_SOURCES[folder]
    root = default_data_dir(data_dir) / folder
    if isinstance(spec, UrlFile):
        url = source or spec.url
        blob = fetch_bytes(url)
        _check_sha256(blob, spec.sha256, f"{folder}/{spec.file}", url)
        return publish_files(root, {spec.file: blob})
    try:
        from datasets import load_dataset
    except ImportError as err:
        raise ImportError(f"{folder}: fetching from the hub needs the datasets package: pip install datasets "
                          "(or put the files in the data dir)") from err
    hub = load_dataset(source or spec.hub_id, spec.config)
    files = {}
    for name, split in spec.files.items():
        rows = hub[split]["text"]
        files[name] = "".join(row if row else " \n" for row in rows).encode("utf-8")
    return publish_files(root, files)


def corpus_folder(folder: str, data_dir: str | os.PathLike | None = None) -> Path:
    """``<data dir>/<folder>`` holding every file of the corpus folder, fetched first when none is there."""
    if folder not in CORPUS_SOURCES:
        raise ValueError(f"corpus folder: {folder!r} is not allowed; use {', '.join(CORPUS_SOURCES)}")
    spec = CORPUS_SOURCES[folder]
    names = list(spec.files) if isinstance(spec, HubText) else [spec.file]
    return ensure_folder(default_data_dir(data_dir) / folder, names, lambda: download_corpus(folder, data_dir),
                         _source_name(spec))


# ----------------------------------------------------------------------------- speech (chapter 13)

FSDD_URL = "https://github.com/Jakobovski/free-spoken-digit-dataset/archive/refs/tags/v1.0.10.tar.gz"
FSDD_SHA256 = "45a9b976ba3397a2fd5c70a9f2e43c34f442a3a6be47392ecfc41174b678f37e"  # names + bytes of recordings/*.wav
FSDD_FILES = 3000  # 6 speakers x 10 digits x 50 takes


def fsdd_checksum(wavs: dict[str, bytes]) -> str:
    """SHA-256 over the sorted file names and their bytes (name, then bytes, for each ``recordings/*.wav``): the
    checksum ``../shared/datasets/README.md`` gives for the copy there."""
    h = hashlib.sha256()
    for name in sorted(wavs):
        h.update(name.encode())
        h.update(wavs[name])
    return h.hexdigest()


def _speakers_from_metadata(source: bytes) -> dict:
    """The ``metadata = {...}`` dict of the dataset's metadata.py, read without running it."""
    for node in ast.parse(source.decode("utf-8")).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "metadata" for t in node.targets):
            return ast.literal_eval(node.value)
    raise ValueError("metadata.py holds no 'metadata = {...}'")


FSDD_SPEAKERS = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")


def fsdd_folder(data_dir: str | os.PathLike | None = None) -> Path:
    """``<data dir>/fsdd`` holding all 3,000 recordings and speakers.json, fetched first when none is there."""
    names = [f"recordings/{d}_{s}_{i}.wav" for d in range(10) for s in FSDD_SPEAKERS for i in range(50)]
    return ensure_folder(default_data_dir(data_dir) / "fsdd", names + ["speakers.json"], lambda: download_fsdd(data_dir),
                         FSDD_URL)


def download_fsdd(data_dir: str | os.PathLike | None = None, *, url: str = FSDD_URL) -> Path:
    """Fetch the Free Spoken Digit Dataset's release archive and write ``<data dir>/fsdd/recordings/*.wav`` and
    ``fsdd/speakers.json``, after checking the 3,000 recordings against FSDD_SHA256. Returns the folder."""
    root = default_data_dir(data_dir) / "fsdd"
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} already exists and is not empty; not overwritten")
    archive = fetch_bytes(url, timeout=300)
    wavs, speakers = {}, None
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:*") as tar:
        for member in tar.getmembers():
            parts = Path(member.name).parts
            if not member.isfile() or len(parts) < 2:
                continue
            if parts[-2] == "recordings" and parts[-1].endswith(".wav") and len(parts) == 3:
                wavs[parts[-1]] = tar.extractfile(member).read()
            elif parts[1:] == ("metadata.py",):
                speakers = _speakers_from_metadata(tar.extractfile(member).read())
    if len(wavs) != FSDD_FILES or speakers is None:
        raise ValueError(f"fsdd: the archive from {url} holds {len(wavs)} recordings (expected {FSDD_FILES}) "
                         f"{'and' if speakers is not None else 'and no'} metadata.py; not written")
    got = fsdd_checksum(wavs)
    if got != FSDD_SHA256:
        raise ValueError(f"fsdd: the recordings from {url} have checksum {got[:16]}..., expected {FSDD_SHA256[:16]}...; "
                         "not written")
    files = {f"recordings/{name}": blob for name, blob in wavs.items()}
    files["speakers.json"] = (json.dumps(speakers, indent=1) + "\n").encode("utf-8")
    if root.exists():  # an empty folder: publish into it
        root.rmdir()
    return publish_files(root, files)
