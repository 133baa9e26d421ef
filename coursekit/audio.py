"""Spoken digits as tensors: WAV files read with the standard library, log-mel features computed with ``torch.stft``
and a mel filterbank written once here (HTK mel scale, triangular filters, as torchaudio's and librosa's
``htk=True, norm=None``; checked against librosa in the tests), the Free Spoken Digit Dataset loaded once and cached,
and the splits an honest speech evaluation needs (the official one, a speaker never heard in training, k takes per
digit of a new speaker). Introduced in notebooks/13_speech_capstone.ipynb.

Shapes: a clip is (samples,) float32 in [-1, 1]; its features (n_mels, frames); a dataset (N, n_mels, frames).
"""

from __future__ import annotations

import hashlib
import json
import os
import wave
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .batching import epoch_order
from .files import save_torch_atomic
from .validate import integer, one_of

__all__ = ["FSDD_RATE", "read_wav", "hz_to_mel", "mel_to_hz", "mel_filterbank", "LogMelSettings", "log_mel",
           "fsdd_folder", "FsddData", "load_fsdd", "official_split", "speaker_split", "few_shot_indices", "SpeechFold",
           "speech_fold", "augment_speech", "SpeechBatches"]

FSDD_RATE = 8000  # every FSDD recording: 8 kHz, mono, 16-bit


def read_wav(path: str | os.PathLike, expected_rate: int | None = None) -> tuple[torch.Tensor, int]:
    """(samples (n,) float32 in [-1, 1], sample rate) of a mono 16-bit PCM WAV file. ``expected_rate``: refuse a
    file at another rate (this course does not resample: a model trained at 8 kHz hears a 16 kHz clip as slowed down
    by half)."""
    with wave.open(str(path), "rb") as w:
        if w.getnchannels() != 1 or w.getsampwidth() != 2:
            raise ValueError(f"{path}: {w.getnchannels()} channel(s) of {8 * w.getsampwidth()} bits; mono 16-bit PCM "
                             "is what this reader takes")
        rate, frames = w.getframerate(), w.readframes(w.getnframes())
    if expected_rate is not None and rate != expected_rate:
        raise ValueError(f"{path}: sample rate {rate} Hz, expected {expected_rate} Hz; resample it first (for example "
                         "with torchaudio.functional.resample): this course does not resample")
    samples = torch.frombuffer(bytearray(frames), dtype=torch.int16).float() / 32768.0
    return samples, rate


def hz_to_mel(f):
    """HTK mel scale: 2595 log10(1 + f / 700)."""
    return 2595.0 * torch.log10(1.0 + torch.as_tensor(f, dtype=torch.float64) / 700.0)


def mel_to_hz(m):
    """Inverse of ``hz_to_mel``."""
    return 700.0 * (10.0 ** (torch.as_tensor(m, dtype=torch.float64) / 2595.0) - 1.0)


def mel_filterbank(n_fft: int, n_mels: int, sample_rate: int, f_min: float = 0.0, f_max: float | None = None) -> torch.Tensor:
    """(n_fft // 2 + 1, n_mels) triangular filters, equally spaced on the HTK mel scale between f_min and f_max
    (default: Nyquist), each rising from its left neighbour's centre to 1 at its own centre and back to 0 at its right
    neighbour's, evaluated at the FFT bins' frequencies (no area normalisation)."""
    f_max = sample_rate / 2 if f_max is None else f_max
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)  # (F,)
    edges = mel_to_hz(torch.linspace(float(hz_to_mel(f_min)), float(hz_to_mel(f_max)), n_mels + 2, dtype=torch.float64))
    left, centre, right = edges[:-2], edges[1:-1], edges[2:]  # (M,) each
    rising = (freqs[:, None] - left) / (centre - left)
    falling = (right - freqs[:, None]) / (right - centre)
    return torch.clamp(torch.minimum(rising, falling), min=0.0).float()


@dataclass(frozen=True)
class LogMelSettings:
    """How a clip becomes features: ``clip_s`` seconds (centred crop, or zero padding on both sides), a Hann window of
    ``win_ms``, a hop of ``hop_ms``, an ``n_fft``-point FFT, ``n_mels`` mel bands, log(power + ``eps``)."""
    sample_rate: int = FSDD_RATE
    clip_s: float = 1.0
    win_ms: float = 25.0
    hop_ms: float = 10.0
    n_fft: int = 256
    n_mels: int = 40
    eps: float = 1e-6

    def frames(self) -> int:
        """Frames per clip (torch.stft with center=True)."""
        return self.samples() // self.hop() + 1

    def samples(self) -> int:
        return round(self.clip_s * self.sample_rate)

    def hop(self) -> int:
        return round(self.hop_ms * self.sample_rate / 1000)

    def window(self) -> int:
        return round(self.win_ms * self.sample_rate / 1000)


def _fit_length(x: torch.Tensor, n: int) -> torch.Tensor:
    """Centre-crop or zero-pad (both sides) the last axis to ``n`` samples."""
    length = x.shape[-1]
    if length >= n:
        start = (length - n) // 2
        return x[..., start:start + n]
    pad = n - length
    return torch.nn.functional.pad(x, (pad // 2, pad - pad // 2))


def log_mel(samples: torch.Tensor, settings: LogMelSettings = LogMelSettings()) -> torch.Tensor:
    """Log-mel features (n_mels, frames) of one clip (n,) or (batch, n_mels, frames) of a batch (batch, n)."""
    if settings.window() > settings.n_fft:
        raise ValueError(f"win_ms: a {settings.window()}-sample window does not fit n_fft={settings.n_fft}")
    x = _fit_length(samples, settings.samples())
    spec = torch.stft(x, settings.n_fft, hop_length=settings.hop(), win_length=settings.window(),
                      window=torch.hann_window(settings.window()), center=True, return_complex=True)
    power = spec.abs() ** 2  # (..., F, frames)
    fb = mel_filterbank(settings.n_fft, settings.n_mels, settings.sample_rate)  # (F, M)
    return torch.log(torch.einsum("...ft,fm->...mt", power, fb) + settings.eps)


def fsdd_folder(data_dir: str | os.PathLike | None) -> Path:
    """``<data dir>/fsdd/recordings`` with all 3,000 recordings. When the folder holds none, the dataset's tagged
    release archive is downloaded there (``downloads.download_fsdd``: checked against its checksum, never over
    existing files); with no network, or a partial copy, one FileNotFoundError names the folder and the source."""
    from .downloads import FSDD_FILES, FSDD_SPEAKERS, FSDD_URL, download_fsdd, ensure_folder
    from .paths import default_data_dir

    root = default_data_dir(data_dir) / "fsdd"
    names = [f"recordings/{d}_{s}_{t}.wav" for d in range(10) for s in FSDD_SPEAKERS for t in range(50)]
    assert len(names) == FSDD_FILES
    ensure_folder(root, ["speakers.json", *names], lambda: download_fsdd(data_dir), f"FSDD's release archive ({FSDD_URL})")
    return root / "recordings"


@dataclass
class FsddData:
    """Features (N, n_mels, frames) float32, digit labels (N,), speaker index (N,) into ``speakers``, take (N,)."""
    features: torch.Tensor
    digits: torch.Tensor
    speaker: torch.Tensor
    take: torch.Tensor
    speakers: list[str]
    settings: LogMelSettings

    def summary(self) -> str:
        return (f"fsdd: {len(self.digits):,} clips, {len(self.speakers)} speakers ({', '.join(self.speakers)}), features "
                f"{tuple(self.features.shape[1:])} (mel bands x frames)")


def load_fsdd(data_dir: str | os.PathLike | None, cache_dir: str | os.PathLike, settings: LogMelSettings = LogMelSettings()
              ) -> FsddData:
    """Every FSDD recording as log-mel features, computed once and cached in ``cache_dir`` under a key made of the
    settings and the files' names and sizes (a change to either computes them again; the data folder is never
    written). Files are named ``{digit}_{speaker}_{take}.wav``."""
    folder = fsdd_folder(data_dir)
    files = sorted(folder.glob("*.wav"))
    listing = [(f.name, f.stat().st_size) for f in files]
    key = hashlib.sha256(json.dumps([asdict(settings), listing]).encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"fsdd-logmel-{key}.pt"
    if path.exists():
        payload = torch.load(path, weights_only=True)
    else:
        clips, digits, speakers, takes = [], [], [], []
        for f in files:
            digit, speaker, take = f.stem.split("_")
            samples, _ = read_wav(f, expected_rate=settings.sample_rate)
            clips.append(_fit_length(samples, settings.samples()))
            digits.append(int(digit))
            speakers.append(speaker)
            takes.append(int(take))
        names = sorted(set(speakers))
        payload = {"features": log_mel(torch.stack(clips), settings).contiguous(), "digits": torch.tensor(digits),
                   "speaker": torch.tensor([names.index(s) for s in speakers]), "take": torch.tensor(takes),
                   "speakers": names}
        save_torch_atomic(payload, path)
    return FsddData(payload["features"], payload["digits"], payload["speaker"], payload["take"], list(payload["speakers"]),
                    settings)


def official_split(data: FsddData, test_takes: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, test indices) of the dataset's own split: takes 0 to test_takes - 1 of every speaker and digit
    are the test set (every speaker is heard in training)."""
    test = data.take < test_takes
    return torch.nonzero(~test).squeeze(1), torch.nonzero(test).squeeze(1)


def speaker_split(data: FsddData, held_out: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices of the other speakers, indices of ``held_out``): a speaker never heard in training."""
    one_of("held_out", held_out, data.speakers)
    mine = data.speaker == data.speakers.index(held_out)
    return torch.nonzero(~mine).squeeze(1), torch.nonzero(mine).squeeze(1)


def few_shot_indices(data: FsddData, speaker: str, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(k takes per digit of ``speaker`` drawn with ``seed``, the rest of that speaker's clips): adaptation data and
    its evaluation, disjoint."""
    one_of("speaker", speaker, data.speakers)
    mine = torch.nonzero(data.speaker == data.speakers.index(speaker)).squeeze(1)
    per_digit = {d: mine[data.digits[mine] == d] for d in range(10)}
    fewest = min(len(v) for v in per_digit.values())
    integer("k", k, lo=1, hi=fewest - 1, allowed=f"an integer from 1 to {fewest - 1} (the speaker has {fewest} takes "
                                                   "of a digit, and at least one must stay for evaluation)")
    g = torch.Generator().manual_seed(seed)
    chosen = torch.cat([v[torch.randperm(len(v), generator=g)[:k]] for v in per_digit.values()])
    rest = mine[~torch.isin(mine, chosen)]
    return chosen.sort().values, rest


@dataclass
class SpeechFold:
    """One evaluation setting over the heard speakers' takes: ``test`` (takes 0 .. test_takes - 1, the official
    split's test takes), ``val`` (the next ``val_takes``: where settings are chosen), ``train`` (the rest), and, with
    a ``held_out`` speaker, ``unseen`` (all of that speaker's clips, never in train or val). ``mean`` / ``std``: the
    training features' statistics, the normalisation every split of the fold uses."""
    name: str
    held_out: str | None
    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor
    unseen: torch.Tensor | None
    mean: float
    std: float


def speech_fold(data: FsddData, held_out: str | None = None, *, test_takes: int = 5, val_takes: int = 5) -> SpeechFold:
    """The official split (``held_out=None``: all six speakers heard, test = their first ``test_takes`` takes) or a
    leave-one-speaker-out fold, both with ``val_takes`` takes of the heard speakers carved from training."""
    integer("test_takes", test_takes, lo=1)
    integer("val_takes", val_takes, lo=1)
    heard = torch.ones_like(data.digits, dtype=torch.bool)
    unseen = None
    if held_out is not None:
        _, unseen = speaker_split(data, held_out)
        heard[unseen] = False
    test, val = heard & (data.take < test_takes), heard & (data.take >= test_takes) & (data.take < test_takes + val_takes)
    train = heard & (data.take >= test_takes + val_takes)
    if not train.any():
        raise ValueError(f"val_takes: {val_takes} with test_takes {test_takes} leave no take for training "
                         f"(the speakers have {int(data.take.max()) + 1})")
    ids = [torch.nonzero(m).squeeze(1) for m in (train, val, test)]
    feats = data.features[ids[0]]
    return SpeechFold("official" if held_out is None else f"unseen {held_out}", held_out, *ids, unseen,
                      float(feats.mean()), float(feats.std()))


def augment_speech(x: torch.Tensor, *, max_shift: int, max_freq_mask: int, max_time_mask: int,
                   generator: torch.Generator) -> torch.Tensor:
    """Training augmentation of normalised log-mel batches x (B, 1, n_mels, frames), on x's device, one draw per
    example: a time shift of up to ``max_shift`` frames either way (the vacated frames take the example's quietest
    value: silence), then SpecAugment's masks (Park et al. 2019): one band of up to ``max_freq_mask`` mel channels and
    one span of up to ``max_time_mask`` frames set to 0, the normalised mean. Returns a new tensor."""
    b, _, m, t = x.shape
    dev = x.device

    def draw(high, size):
        return torch.randint(0, high, size, generator=generator).to(dev)

    shift = draw(2 * max_shift + 1, (b, 1)) - max_shift
    source = torch.arange(t, device=dev)[None] - shift  # (B, T): the frame each output frame comes from
    inside = ((source >= 0) & (source < t))[:, None, None, :]
    shifted = torch.gather(x, 3, source.clamp(0, t - 1)[:, None, None, :].expand(b, 1, m, t))
    quiet = x.amin(dim=(1, 2, 3), keepdim=True)
    out = torch.where(inside, shifted, quiet)
    for axis, size, high in ((2, m, max_freq_mask), (3, t, max_time_mask)):
        width = draw(high + 1, (b, 1))
        start = (torch.rand(b, 1, generator=generator).to(dev) * (size - width + 1)).floor()
        pos = torch.arange(size, device=dev)[None]
        masked = (pos >= start) & (pos < start + width)  # (B, size)
        shape = (b, 1, size, 1) if axis == 2 else (b, 1, 1, size)
        out = out.masked_fill(masked.view(shape), 0.0)
    return out


class SpeechBatches:
    """(x (B, 1, n_mels, frames) float32 normalised with ``mean`` / ``std``, digits (B,)) batches of the clips
    ``indices`` of ``data``, cut from tensors on ``device``, shuffled per epoch with (seed, epoch) when ``shuffle``,
    augmented (``augment_speech``) when ``augment``; ``len()`` is the number of batches, as ``train.fit`` needs."""

    def __init__(self, data: FsddData, indices: torch.Tensor, *, mean: float, std: float, batch_size: int = 64,
                 shuffle: bool = False, augment: bool = False, seed: int = 0, device: str | torch.device = "cpu",
                 max_shift: int = 4, max_freq_mask: int = 5, max_time_mask: int = 5):
        integer("batch_size", batch_size, lo=1)
        if len(indices) == 0:
            raise ValueError("indices: no clips given; a split must hold at least one clip")
        self.x = ((data.features[indices] - mean) / std).unsqueeze(1).to(device)
        self.y = data.digits[indices].to(device)
        self.batch_size, self.shuffle, self.augment, self.seed, self.epoch = batch_size, shuffle, augment, seed, 0
        self.masks = {"max_shift": max_shift, "max_freq_mask": max_freq_mask, "max_time_mask": max_time_mask}

    def __len__(self) -> int:
        return -(-len(self.y) // self.batch_size)

    def __iter__(self):
        gen, order = epoch_order(len(self.y), seed=self.seed, epoch=self.epoch, shuffle=self.shuffle, device=self.x.device)
        self.epoch += 1
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            x = self.x[idx]
            yield (augment_speech(x, generator=gen, **self.masks) if self.augment else x), self.y[idx]
