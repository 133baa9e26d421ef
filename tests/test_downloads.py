"""Every dataset the course reads has a download route, tested offline on planted sources: the files it writes are
the local copy's bytes, nothing is overwritten, a partial copy is never completed, and a failure names the folder
and the source."""

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from coursekit import downloads
from coursekit.downloads import (
    FSDD_SHA256,
    UrlFile,
    corpus_folder,
    download_corpus,
    download_fsdd,
    fsdd_checksum,
    fsdd_folder,
    publish_files,
)

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets"
needs_shared = pytest.mark.skipif(not (SHARED / "wikitext2").is_dir() or not (SHARED / "fsdd").is_dir(),
                                  reason="needs ../shared/datasets (the local copies the planted sources are made from)")


def test_publish_files_writes_a_new_folder_whole_and_overwrites_nothing(tmp_path):
    root = publish_files(tmp_path / "d" / "set", {"a.txt": b"A", "sub/b.txt": b"B"})
    assert (root / "a.txt").read_bytes() == b"A" and (root / "sub" / "b.txt").read_bytes() == b"B"
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["set"], "no temporary folder left beside it"
    with pytest.raises(FileExistsError, match="a.txt already in .*not overwritten"):
        publish_files(root, {"a.txt": b"other", "c.txt": b"C"})
    assert (root / "a.txt").read_bytes() == b"A" and not (root / "c.txt").exists(), "nothing written on refusal"
    publish_files(root, {"c.txt": b"C"})  # into an existing folder: new files only
    assert (root / "c.txt").read_bytes() == b"C"


def _plant_wikitext_hub(folder: Path) -> Path:
    """A folder laid out like the hub repository Salesforce/wikitext (config wikitext-2-v1, parquet files, its
    README's config table), whose rows are the local files' lines with the blank lines (" ") emptied, as the hub's."""
    from datasets import Dataset

    sub = folder / "wikitext-2-v1"
    sub.mkdir(parents=True)
    for split, name in (("validation", "valid.txt"), ("test", "test.txt")):
        lines = (SHARED / "wikitext2" / name).read_text(encoding="utf-8").splitlines(keepends=True)
        rows = ["" if line == " \n" else line for line in lines]
        Dataset.from_dict({"text": rows}).to_parquet(str(sub / f"{split}-00000-of-00001.parquet"))
    (folder / "README.md").write_text("---\nconfigs:\n- config_name: wikitext-2-v1\n  data_files:\n"
                                      "  - split: validation\n    path: wikitext-2-v1/validation-*\n"
                                      "  - split: test\n    path: wikitext-2-v1/test-*\n---\n")
    return folder


@needs_shared
def test_wikitext2_from_a_planted_hub_repository_is_byte_identical_to_the_local_copy(tmp_path):
    hub = _plant_wikitext_hub(tmp_path / "hub")
    root = download_corpus("wikitext2", tmp_path / "data", source=str(hub))
    for name in ("valid.txt", "test.txt"):
        assert (root / name).read_bytes() == (SHARED / "wikitext2" / name).read_bytes(), name
    with pytest.raises(FileExistsError, match="not overwritten"):
        download_corpus("wikitext2", tmp_path / "data", source=str(hub))


def test_tinyshakespeare_from_a_url_is_checked_and_a_bad_file_is_not_written(tmp_path, monkeypatch):
    text = b"First Citizen:\nBefore we proceed any further, hear me speak.\n"
    good = tmp_path / "input.txt"
    good.write_bytes(text)
    monkeypatch.setitem(downloads.CORPUS_SOURCES, "tinyshakespeare",
                        UrlFile(good.as_uri(), "input.txt", hashlib.sha256(text).hexdigest()))
    assert corpus_folder("tinyshakespeare", tmp_path / "data") == tmp_path / "data" / "tinyshakespeare"
    assert (tmp_path / "data" / "tinyshakespeare" / "input.txt").read_bytes() == text
    bad = tmp_path / "truncated.txt"
    bad.write_bytes(text[:20])
    with pytest.raises(ValueError, match="SHA-256 .* not written"):
        download_corpus("tinyshakespeare", tmp_path / "other", source=bad.as_uri())
    assert not (tmp_path / "other").exists()


def test_an_absent_corpus_without_network_names_the_folder_and_the_source(tmp_path, monkeypatch):
    monkeypatch.setitem(downloads.CORPUS_SOURCES, "tinyshakespeare",
                        UrlFile((tmp_path / "nowhere.txt").as_uri(), "input.txt", "0" * 64))
    with pytest.raises(FileNotFoundError, match=r"tinyshakespeare: input.txt not found in .*data/tinyshakespeare, and "
                                                r"fetching file://.*nowhere.txt failed \(URLError.*COURSEKIT_DATA"):
        corpus_folder("tinyshakespeare", tmp_path / "data")
    (tmp_path / "part" / "wikitext2").mkdir(parents=True)
    (tmp_path / "part" / "wikitext2" / "test.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match="valid.txt not found .*a partial copy is not completed from Salesforce"):
        corpus_folder("wikitext2", tmp_path / "part")


def test_load_corpus_ids_fetches_an_absent_corpus_first(tmp_path, monkeypatch):
    """Chapter 10's reader takes the route: a user with the network and no ../shared gets the text."""
    from coursekit.llm import load_corpus_ids

    text = "To be, or not to be, that is the question.\n" * 4
    src = tmp_path / "input.txt"
    src.write_text(text)
    monkeypatch.setitem(downloads.CORPUS_SOURCES, "tinyshakespeare",
                        UrlFile(src.as_uri(), "input.txt", hashlib.sha256(text.encode()).hexdigest()))

    class Words:  # a whitespace tokenizer: the route, not the tokenizer, is under test
        def __call__(self, s, add_special_tokens=False):
            return {"input_ids": [len(w) for w in s.split()]}

    ids = load_corpus_ids("shakespeare", Words(), data_dir=tmp_path / "data")
    assert ids.tolist()[:4] == [2, 3, 2, 3] and len(ids) == 40


def _plant_fsdd_archive(path: Path, drop: int = 0) -> Path:
    """The release archive's layout (free-spoken-digit-dataset-1.0.10/recordings/*.wav, metadata.py), made from the
    local copy; ``drop`` leaves out that many recordings."""
    speakers = json.loads((SHARED / "fsdd" / "speakers.json").read_text())
    top = "free-spoken-digit-dataset-1.0.10"
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        def add(name, blob):
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
        add("metadata.py", f'"""Speakers."""\n\nmetadata = {speakers!r}\n'.encode())
        add("utils/fsdd.py", b"# not data\n")
        for wav in sorted((SHARED / "fsdd" / "recordings").glob("*.wav"))[drop:]:
            add(f"recordings/{wav.name}", wav.read_bytes())
    return path


@needs_shared
def test_fsdd_from_a_planted_release_archive_matches_the_local_copy(tmp_path):
    archive = _plant_fsdd_archive(tmp_path / "v1.0.10.tar.gz")
    root = download_fsdd(tmp_path / "data", url=archive.as_uri())
    wavs = {p.name: p.read_bytes() for p in (root / "recordings").glob("*.wav")}
    assert len(wavs) == 3000 and fsdd_checksum(wavs) == FSDD_SHA256
    assert (root / "speakers.json").read_bytes() == (SHARED / "fsdd" / "speakers.json").read_bytes()
    assert fsdd_folder(tmp_path / "data") == root, "complete: found, not fetched again"
    with pytest.raises(FileExistsError, match="not overwritten"):
        download_fsdd(tmp_path / "data", url=archive.as_uri())
    short = _plant_fsdd_archive(tmp_path / "short.tar.gz", drop=1)
    with pytest.raises(ValueError, match="holds 2999 recordings .*not written"):
        download_fsdd(tmp_path / "other", url=short.as_uri())
    assert not (tmp_path / "other" / "fsdd").exists()
