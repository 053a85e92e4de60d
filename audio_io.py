"""Audio intake for Cover, Extend and Edit, and the splice that puts a new span back into a song.

Every upload goes through ``load_audio``: the header is read first and anything too
long, too fast, too wide, empty or undecodable is refused before a sample is decoded.
What passes is decoded to float32 stereo at 48 kHz, the pipeline's only format.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from math import gcd
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

SAMPLE_RATE = 48_000  # Hz, what the pipeline takes
MAX_DURATION_S = 600
MAX_SAMPLE_RATE_HZ = 192_000
MAX_CHANNELS = 8
ACCEPTED_FORMATS = ("WAV", "FLAC", "OGG", "MP3")
_READABLE_FORMATS = {*ACCEPTED_FORMATS, "WAVEX", "RF64"}  # WAV variants for big or multichannel files
DECODE_BLOCK_FRAMES = 1 << 20  # decode in blocks so a lying header cannot exhaust memory


class AudioInputError(ValueError):
    """An upload the studio will not use; the message says which input and why."""


@dataclass(frozen=True)
class LoadedAudio:
    audio: np.ndarray  # float32 [2, samples] at SAMPLE_RATE
    source_sample_rate: int
    source_channels: int
    path: str

    @property
    def duration_s(self) -> float:
        return self.audio.shape[-1] / SAMPLE_RATE


def _minutes(seconds: float) -> str:
    whole = round(seconds)
    return f"{whole // 60}:{whole % 60:02d}"


def probe(path: str | Path, label: str = "Audio", max_duration_s: float = MAX_DURATION_S):
    """Read and check the header only; returns soundfile's info. Raises ``AudioInputError``."""
    import soundfile as sf

    file = Path(path)
    if not file.is_file():
        raise AudioInputError(f"{label}: the file {file.name!r} was not found; upload it again")
    if file.stat().st_size == 0:
        raise AudioInputError(f"{label}: {file.name!r} is empty (0 bytes)")
    try:
        info = sf.info(str(file))
    except (sf.LibsndfileError, RuntimeError, TypeError) as error:
        raise AudioInputError(
            f"{label}: {file.name!r} is not audio the studio can read; use {', '.join(ACCEPTED_FORMATS)}"
        ) from error
    if info.format not in _READABLE_FORMATS:
        raise AudioInputError(f"{label}: {file.name!r} is {info.format_info}; use {', '.join(ACCEPTED_FORMATS)}")
    if info.frames <= 0 or info.samplerate <= 0:
        raise AudioInputError(f"{label}: {file.name!r} holds no audio (0 frames)")
    if info.samplerate > MAX_SAMPLE_RATE_HZ:
        raise AudioInputError(
            f"{label}: {file.name!r} is sampled at {info.samplerate / 1000:g} kHz; "
            f"the limit is {MAX_SAMPLE_RATE_HZ // 1000} kHz"
        )
    if info.channels > MAX_CHANNELS:
        raise AudioInputError(f"{label}: {file.name!r} has {info.channels} channels; the limit is {MAX_CHANNELS}")
    if info.frames / info.samplerate > max_duration_s:
        raise AudioInputError(
            f"{label} is {_minutes(info.frames / info.samplerate)} long; the limit is {_minutes(max_duration_s)}"
        )
    return info


def load_audio(path: str | Path, label: str = "Audio", max_duration_s: float = MAX_DURATION_S) -> LoadedAudio:
    """Check the header, then decode and convert one audio file. Raises ``AudioInputError``."""
    file = Path(path)
    info = probe(file, label, max_duration_s)
    data = _decode(file, info.samplerate, label, max_duration_s)
    if data.shape[0] == 0:
        raise AudioInputError(f"{label}: {file.name!r} holds no audio (0 frames decoded)")
    if not np.isfinite(data).all():
        log.warning("%s: replacing non-finite samples in %s with silence", label, file.name)
        data = np.nan_to_num(data, nan=0.0, posinf=0.0, neginf=0.0)
    stereo = _to_stereo(data)
    return LoadedAudio(
        audio=_resample(stereo, info.samplerate),
        source_sample_rate=info.samplerate,
        source_channels=info.channels,
        path=str(file),
    )


def _decode(file: Path, rate: int, label: str, max_duration_s: float) -> np.ndarray:
    """Decode block by block, stopping as soon as the audio proves longer than allowed."""
    import soundfile as sf

    limit = int(max_duration_s * rate) + 1
    blocks: list[np.ndarray] = []
    total = 0
    try:
        with sf.SoundFile(str(file)) as handle:
            for block in handle.blocks(blocksize=DECODE_BLOCK_FRAMES, dtype="float32", always_2d=True):
                total += block.shape[0]
                if total > limit:
                    raise AudioInputError(f"{label} is longer than {_minutes(max_duration_s)}, the limit")
                blocks.append(block)
    except sf.LibsndfileError as error:
        if not blocks:
            raise AudioInputError(f"{label}: {file.name!r} could not be decoded ({error})") from error
        # A truncated file: keep what decoded cleanly, as players do.
        log.warning("%s: %s is truncated; using the %d frames that decoded", label, file.name, total)
    if not blocks:
        return np.zeros((0, 2), dtype=np.float32)
    return np.concatenate(blocks, axis=0)


def _to_stereo(data: np.ndarray) -> np.ndarray:
    """[frames, channels] -> [2, frames].

    Mono is copied to both sides. Wider files are folded down: even-numbered channels
    to the left, odd to the right, each side averaged, which keeps a 5.1 or 7.1 file's
    front pair dominant without clipping.
    """
    channels = data.shape[1]
    if channels == 1:
        return np.repeat(data.T, 2, axis=0)
    if channels == 2:
        return np.ascontiguousarray(data.T)
    left = data[:, 0::2].mean(axis=1)
    right = data[:, 1::2].mean(axis=1)
    return np.stack([left, right]).astype(np.float32)


def _resample(audio: np.ndarray, rate: int) -> np.ndarray:
    """Polyphase resampling (Kaiser-windowed FIR): exact rational ratios such as
    44.1 -> 48 kHz (160/147) without the wrap-around artefacts of FFT resampling."""
    if rate == SAMPLE_RATE:
        return np.ascontiguousarray(audio, dtype=np.float32)
    from scipy.signal import resample_poly

    common = gcd(rate, SAMPLE_RATE)
    out = resample_poly(audio, SAMPLE_RATE // common, rate // common, axis=1)
    return np.ascontiguousarray(out, dtype=np.float32)


def fit_length(audio: np.ndarray, samples: int) -> np.ndarray:
    """Trim or zero-pad ``[channels, n]`` audio to exactly ``samples``."""
    if audio.shape[-1] >= samples:
        return audio[..., :samples]
    pad = np.zeros((*audio.shape[:-1], samples - audio.shape[-1]), dtype=audio.dtype)
    return np.concatenate([audio, pad], axis=-1)


def crossfade_splice(original: np.ndarray, generated: np.ndarray, start: int, end: int, fade: int) -> np.ndarray:
    """``original`` with ``generated[:, start:end]`` put in its place.

    Both arrays are ``[channels, n]`` of the same shape. Equal-power crossfades of
    ``fade`` samples run just outside the span, over ``[start - fade, start)`` and
    ``[end, end + fade)``, clipped to the array; every other sample of ``original``
    outside ``[start, end)`` is returned bit-identical. Equal-power (sin/cos) keeps the
    level steady across the seam for material that is not phase-aligned, as here.
    """
    if original.shape != generated.shape:
        raise ValueError(f"shapes differ: {original.shape} vs {generated.shape}")
    n = original.shape[-1]
    if not 0 <= start < end <= n:
        raise ValueError(f"span {start}-{end} is not inside 0-{n}")
    out = original.copy()
    out[:, start:end] = generated[:, start:end]
    ramp = np.sin(0.5 * np.pi * (np.arange(fade, dtype=np.float64) + 0.5) / max(fade, 1))
    lead = slice(max(start - fade, 0), start)
    if lead.stop > lead.start:
        rise = ramp[fade - (lead.stop - lead.start) :]  # generated fades in towards the span
        out[:, lead] = _mix(original[:, lead], generated[:, lead], rise)
    tail = slice(end, min(end + fade, n))
    if tail.stop > tail.start:
        fall = ramp[::-1][: tail.stop - tail.start]  # generated fades out after the span
        out[:, tail] = _mix(original[:, tail], generated[:, tail], fall)
    return out


def _mix(original: np.ndarray, generated: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Equal-power blend: ``weight`` of generated, ``sqrt(1 - weight**2)`` of original."""
    keep = np.sqrt(1.0 - weight**2)
    return (original * keep + generated * weight).astype(original.dtype)
