"""Speech helpers (coursekit.audio, coursekit.kws): the mel filterbank and log-mel features against librosa, the WAV
reader on a synthetic sine, the splits (no speaker leaks, k bounded), the feature cache and its invalidation, the
missing-data error, and the DS-CNN's shapes."""

import copy
import math
import wave

import pytest
import torch

from coursekit import audio
from coursekit.audio import LogMelSettings, few_shot_indices, load_fsdd, log_mel, mel_filterbank, read_wav, speaker_split
from coursekit.downloads import FSDD_SPEAKERS
from coursekit.kws import DSCNN
from coursekit.prune import bn_scale_importance


def _write_wav(path, samples, rate=8000):
    pcm = (torch.clamp(samples, -1, 1) * 32767).round().to(torch.int16)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.numpy().tobytes())


def _sine(freq, seconds=0.5, rate=8000, amplitude=0.5):
    t = torch.arange(int(seconds * rate)) / rate
    return amplitude * torch.sin(2 * math.pi * freq * t)


def test_mel_filterbank_and_log_mel_match_librosa():
    librosa = pytest.importorskip("librosa")
    import numpy as np

    ours = mel_filterbank(256, 40, 8000)
    ref = librosa.filters.mel(sr=8000, n_fft=256, n_mels=40, fmin=0.0, fmax=4000.0, htk=True, norm=None)  # (M, F)
    assert ours.shape == (129, 40)
    assert torch.allclose(ours, torch.from_numpy(ref.T).float(), atol=1e-5)
    torch.manual_seed(0)
    x = torch.randn(8000) * 0.1 + _sine(440, 1.0)
    s = LogMelSettings()
    mel = librosa.feature.melspectrogram(y=x.numpy().astype(np.float32), sr=8000, n_fft=256, hop_length=80,
                                         win_length=200, window="hann", center=True, pad_mode="reflect", power=2.0,
                                         n_mels=40, htk=True, norm=None, fmin=0.0, fmax=4000.0)
    got = log_mel(x, s)
    assert got.shape == (40, s.frames()) == (40, 101)
    assert torch.allclose(got, torch.log(torch.from_numpy(mel) + s.eps).float(), atol=1e-3)


def test_wav_reader_finds_a_sines_frequency_and_refuses_another_rate(tmp_path):
    _write_wav(tmp_path / "tone.wav", _sine(1000))
    samples, rate = read_wav(tmp_path / "tone.wav", expected_rate=8000)
    assert rate == 8000 and samples.shape == (4000,) and abs(float(samples.abs().max()) - 0.5) < 1e-3
    features = log_mel(samples)  # (40, frames): the loudest band holds 1 kHz
    centres = audio.mel_to_hz(torch.linspace(0, float(audio.hz_to_mel(4000)), 42)[1:-1])
    peak = int(features.mean(1).argmax())
    assert abs(float(centres[peak]) - 1000) < 80, float(centres[peak])
    _write_wav(tmp_path / "fast.wav", _sine(1000, rate=16000), rate=16000)
    with pytest.raises(ValueError, match="sample rate 16000 Hz, expected 8000 Hz; resample it first"):
        read_wav(tmp_path / "fast.wav", expected_rate=8000)


@pytest.fixture(scope="module")
def tiny_fsdd(tmp_path_factory):
    """An FSDD-shaped folder (made once for this module, read only): 3,000 short clips, a tone per digit."""
    tmp_path = tmp_path_factory.mktemp("fsdd")
    root = tmp_path / "data" / "fsdd"
    (root / "recordings").mkdir(parents=True)
    for d in range(10):
        clip = _sine(300 + 250 * d, seconds=0.05)
        for s in FSDD_SPEAKERS:
            for t in range(50):
                _write_wav(root / "recordings" / f"{d}_{s}_{t}.wav", clip)
    (root / "speakers.json").write_text("{}")
    return tmp_path / "data"


def test_fsdd_loads_once_splits_without_leaks_and_recomputes_on_new_settings(tiny_fsdd, tmp_path):
    cache = tmp_path / "cache"
    data = load_fsdd(tiny_fsdd, cache)
    assert data.features.shape == (3000, 40, 101) and data.speakers == sorted(FSDD_SPEAKERS)
    assert len(list(cache.glob("fsdd-logmel-*.pt"))) == 1
    again = load_fsdd(tiny_fsdd, cache)  # from the cache
    assert torch.equal(again.features, data.features)
    coarse = load_fsdd(tiny_fsdd, cache, LogMelSettings(hop_ms=20.0, n_mels=32))
    assert coarse.features.shape == (3000, 32, 51) and len(list(cache.glob("fsdd-logmel-*.pt"))) == 2
    train, test = audio.official_split(data)
    assert len(test) == 300 and int(data.take[test].max()) == 4 and int(data.take[train].min()) == 5
    for held in data.speakers:
        others, mine = speaker_split(data, held)
        assert len(mine) == 500 and set(data.speaker[others].tolist()).isdisjoint(set(data.speaker[mine].tolist()))
    with pytest.raises(ValueError, match="held_out: 'alice' is not allowed"):
        speaker_split(data, "alice")
    chosen, rest = few_shot_indices(data, "theo", 2, seed=0)
    assert len(chosen) == 20 and len(rest) == 480 and not set(chosen.tolist()) & set(rest.tolist())
    assert sorted(data.digits[chosen].tolist()) == sorted(list(range(10)) * 2)
    assert torch.equal(few_shot_indices(data, "theo", 2, seed=0)[0], chosen)
    with pytest.raises(ValueError, match="k: 50 is not allowed; use an integer from 1 to 49"):
        few_shot_indices(data, "theo", 50, seed=0)


def test_missing_fsdd_names_the_folder_and_the_source(tmp_path, monkeypatch):
    from coursekit import downloads

    def offline(url, timeout=60.0):
        raise OSError("no network here")

    monkeypatch.setattr(downloads, "fetch_bytes", offline)
    with pytest.raises(FileNotFoundError, match=r"fsdd: .* not found in .*fsdd, and fetching FSDD's release archive"):
        load_fsdd(tmp_path / "empty", tmp_path / "cache")
    assert not (tmp_path / "empty" / "fsdd" / "recordings").exists()


def test_dscnn_shapes_and_the_course_trimming_removes_its_blocks():
    from coursekit.trim import angular_importance, removable_blocks, remove_blocks

    model = DSCNN(width=16, blocks=3).eval()
    x = torch.randn(2, 40, 101)
    assert model(x).shape == (2, 10) and model(x.unsqueeze(1)).shape == (2, 10)
    assert removable_blocks(model) == ["blocks.0", "blocks.1", "blocks.2"]  # every block keeps its channel count
    trimmed = remove_blocks(model, ["blocks.1"])
    assert isinstance(trimmed.blocks[1], torch.nn.Identity) and not isinstance(model.blocks[1], torch.nn.Identity)
    assert trimmed(x).shape == (2, 10) and removable_blocks(trimmed) == ["blocks.0", "blocks.2"]
    with pytest.raises(ValueError, match="no block"):
        remove_blocks(trimmed, ["blocks.1"])  # already gone
    scores = angular_importance(model, [(x, torch.zeros(2, dtype=torch.long))])
    assert set(scores) == {"blocks.0", "blocks.1", "blocks.2"} and all(0 <= v <= 1 for v in scores.values())
    with pytest.raises(ValueError, match="width: 0 is not allowed"):
        DSCNN(width=0)


def test_speech_augmentation_shifts_masks_and_repeats_with_its_seed():
    from coursekit.audio import augment_speech

    x = torch.arange(4 * 8 * 20, dtype=torch.float32).view(4, 1, 8, 20) + 1.0  # every value distinct and > 0
    none = augment_speech(x, max_shift=0, max_freq_mask=0, max_time_mask=0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(none, x)
    a = augment_speech(x, max_shift=3, max_freq_mask=2, max_time_mask=2, generator=torch.Generator().manual_seed(1))
    b = augment_speech(x, max_shift=3, max_freq_mask=2, max_time_mask=2, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == x.shape and not torch.equal(a, x)
    shifted = augment_speech(x, max_shift=3, max_freq_mask=0, max_time_mask=0, generator=torch.Generator().manual_seed(2))
    for i in range(4):  # each example is its own frames moved in time, the vacated ones filled with its minimum
        row = shifted[i, 0, 0]
        kept = row[row != x[i].min()]
        assert torch.equal(kept, x[i, 0, 0][(x[i, 0, 0][:, None] == kept[None]).any(1)])
    masked = augment_speech(x, max_shift=0, max_freq_mask=8, max_time_mask=0, generator=torch.Generator().manual_seed(3))
    zero_rows = (masked == 0).all(dim=3).squeeze(1)  # (B, n_mels): whole mel bands set to 0
    assert int(zero_rows.sum()) == int((masked == 0).sum()) // 20


def test_speech_batches_cover_each_clip_once_per_epoch_and_refuse_empty_splits(tiny_fsdd, tmp_path):
    from coursekit.audio import SpeechBatches

    data = load_fsdd(tiny_fsdd, tmp_path / "cache", LogMelSettings(hop_ms=20.0))
    train, test = audio.official_split(data)
    batches = SpeechBatches(data, test, mean=float(data.features.mean()), std=float(data.features.std()), batch_size=64,
                            shuffle=True, augment=True, seed=0)
    assert len(batches) == 5
    seen = torch.cat([y for _, y in batches])
    assert sorted(seen.tolist()) == sorted(data.digits[test].tolist())
    x, _ = next(iter(SpeechBatches(data, test, mean=0.0, std=1.0, batch_size=8)))
    assert x.shape == (8, 1, 40, 51) and torch.equal(x[:, 0], data.features[test[:8]])
    with pytest.raises(ValueError, match="no clips given"):
        SpeechBatches(data, test[:0], mean=0.0, std=1.0)
    with pytest.raises(ValueError, match="batch_size: 0 is not allowed"):
        SpeechBatches(data, test, mean=0.0, std=1.0, batch_size=0)


def test_course_channel_pruning_takes_the_dscnn_and_equals_the_dense_model_with_those_channels_silenced():
    from coursekit.prune import channel_groups, prune_channels

    torch.manual_seed(0)
    model = DSCNN(width=16, blocks=3).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    groups = channel_groups(model, "all")
    assert list(groups) == ["stem", "blocks.0", "blocks.1", "blocks.2"]
    pruned = prune_channels(model, 0.5, scope="all", importance=bn_scale_importance).eval()  # scores of the BN alone
    widths = [m.out_channels for m in pruned.modules() if isinstance(m, torch.nn.Conv2d)]
    assert widths == [8] * 7 and pruned.head[-1].in_features == 8
    assert all(m.groups == m.in_channels for m in list(pruned.modules()) if isinstance(m, torch.nn.Conv2d)
               and m.kernel_size == (3, 3))
    # the dense model with the removed channels silenced (their BN scale and shift 0, after every producer and
    # pass-through) computes what the pruned model computes
    silenced = copy.deepcopy(model)
    spec = {g["name"]: g for g in silenced.channel_groups_spec()}
    kept = {}
    for name, g in groups.items():
        scores = g.importance(bn_scale_importance)
        kept[name] = torch.sort(torch.topk(scores, 8).indices).values
    with torch.no_grad():
        for name, g in spec.items():
            drop = torch.tensor([c for c in range(16) if c not in kept[name].tolist()])
            for _, bn in g["producers"] + g["passthrough"]:
                bn.weight[drop] = 0
                bn.bias[drop] = 0
    x = torch.randn(3, 40, 51)
    assert torch.allclose(pruned(x), silenced(x), atol=1e-5)
    model.blocks[1] = torch.nn.Identity()  # a removed block: the stream runs past it
    assert list(channel_groups(model, "all")) == ["stem", "blocks.0", "blocks.2"]
    assert prune_channels(model, 0.5, scope="all")(x).shape == (3, 10)
