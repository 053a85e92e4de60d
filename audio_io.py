"""Audio intake for Cover, Extend and Edit, and the splice that puts a new span back into a song.

Every upload goes through ``load_audio``: the header is read first and anything too
long, too fast, too wide, empty or undecodable is refused before a sample is decoded.
What passes is decoded to float32 stereo at 48 kHz, the pipeline's only format.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from validation import MAX_DURATION_S

log = logging.getLogger(__name__)

SAMPLE_RATE = 48_000  # Hz, what the pipeline takes
MAX_SAMPLE_RATE_HZ = 192_000
MAX_CHANNELS = 8
MIN_AUDIO_S = 0.1  # shorter is no song and no voice, and too short for the VAE to encode
ACCEPTED_FORMATS = ("WAV", "FLAC", "OGG", "MP3")
_READABLE_FORMATS = {*ACCEPTED_FORMATS, "WAVEX", "RF64"}  # WAV variants for big or multichannel files
DECODE_BLOCK_FRAMES = 1 << 20  # decode in blocks so a lying header cannot exhaust memory
_UNKNOWN_FRAMES = 2**63 - 1  # libsndfile's SF_COUNT_MAX: the header does not say how long the audio is
# An MP3 without a Xing header only estimates its length from its size (about 0.06 s over for
# the studio's own lameenc exports): a shortfall below this is that estimate, not a cut-off file.
LENGTH_ESTIMATE_SLACK_S = 0.5

# Where each channel of a wider file goes: L, R, C (both sides at -3 dB) or - (LFE, dropped as in
# ITU-R BS.775). WAV and FLAC share the WAVE_FORMAT_EXTENSIBLE default order (FL FR FC LFE BL BR SL SR);
# Ogg follows the Vorbis order (FL FC FR ...). soundfile does not expose a WAV's own channel mask, so
# the default layout for the channel count is assumed.
_LAYOUTS = {
    "WAV": {3: "LRC", 4: "LRLR", 5: "LRCLR", 6: "LRC-LR", 7: "LRC-CLR", 8: "LRC-LRLR"},
    "OGG": {3: "LCR", 4: "LRLR", 5: "LCRLR", 6: "LCRLR-", 7: "LCRLRC-", 8: "LCRLRLR-"},
}
_SIDES = {"L": (1.0, 0.0), "R": (0.0, 1.0), "C": (math.sqrt(0.5), math.sqrt(0.5)), "-": (0.0, 0.0)}


class AudioInputError(ValueError):
    """An upload the studio will not use; the message says which input and why."""


@dataclass(frozen=True)
class LoadedAudio:
    audio: np.ndarray  # float32 [2, samples] at SAMPLE_RATE
    source_sample_rate: int
    source_channels: int
    path: str
    missing_s: float = 0.0  # promised by the header but not decodable (a cut-off file): worth a warning

    @property
    def duration_s(self) -> float:
        return self.audio.shape[-1] / SAMPLE_RATE


def _minutes(seconds: float, up: bool = False) -> str:
    """``m:ss``; a length over a limit rounds up, so 600.4 s reads 10:01 and never "10:00, the limit is 10:00"."""
    whole = math.ceil(seconds) if up else math.floor(seconds)
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
        # libsndfile also reports 0 frames for an Ogg file cut off before its last page.
        raise AudioInputError(
            f"{label}: {file.name!r} holds no audio (0 frames); if it plays elsewhere, export it again"
        )
    if info.frames >= _UNKNOWN_FRAMES:
        # A FLAC written to a pipe records 0 total samples: no limit can be checked before decoding.
        raise AudioInputError(f"{label}: {file.name!r} does not say how long it is; export it again")
    if info.samplerate > MAX_SAMPLE_RATE_HZ:
        raise AudioInputError(
            f"{label}: {file.name!r} is sampled at {info.samplerate / 1000:g} kHz; "
            f"the limit is {MAX_SAMPLE_RATE_HZ // 1000} kHz"
        )
    if info.channels > MAX_CHANNELS:
        raise AudioInputError(f"{label}: {file.name!r} has {info.channels} channels; the limit is {MAX_CHANNELS}")
    if info.frames / info.samplerate > max_duration_s:
        raise AudioInputError(
            f"{label} is {_minutes(info.frames / info.samplerate, up=True)} long; "
            f"the limit is {_minutes(max_duration_s)}"
        )
    return info


def load_audio(path: str | Path, label: str = "Audio", max_duration_s: float = MAX_DURATION_S) -> LoadedAudio:
    """Check the header, then decode and convert one audio file. Raises ``AudioInputError``."""
    file = Path(path)
    info = probe(file, label, max_duration_s)
    stereo = _decode(file, info, label, max_duration_s)
    decoded = stereo.shape[1]
    if decoded == 0:
        raise AudioInputError(f"{label}: {file.name!r} holds no audio (0 frames decoded)")
    missing_s = max(info.frames - decoded, 0) / info.samplerate
    if decoded / info.samplerate < MIN_AUDIO_S:
        claim = (
            f"; its header claims {info.frames / info.samplerate:.0f} s, so it is cut short" if missing_s > 1 else ""
        )
        raise AudioInputError(
            f"{label}: {file.name!r} holds only {decoded / info.samplerate:.3f} s of audio{claim}; "
            f"at least {MIN_AUDIO_S:g} s is needed"
        )
    if missing_s > LENGTH_ESTIMATE_SLACK_S:
        # Rework checks every time against the decoded length, so a cut-off file is usable as far as it goes.
        log.warning("%s: %s is cut short; using %d of %d frames", label, file.name, decoded, info.frames)
    else:
        missing_s = 0.0
    return LoadedAudio(
        audio=_resample(stereo, info.samplerate),
        source_sample_rate=info.samplerate,
        source_channels=info.channels,
        path=str(file),
        missing_s=missing_s,
    )


def _decode(file: Path, info, label: str, max_duration_s: float) -> np.ndarray:
    """Decode to float32 ``[2, frames]`` block by block, stopping once the audio proves longer than allowed.

    ``read()`` in a loop, not ``SoundFile.blocks()``: blocks() ignores short reads and
    yields its whole reused buffer, so a cut-off MP3 came back padded with a repeat of
    the previous block (or uninitialised memory) as if it were music. Each block is
    folded to stereo at once, so an 8-channel file never sits in memory at full width.
    """
    import soundfile as sf

    limit = int(max_duration_s * info.samplerate) + 1
    mix = _downmix_matrix(info.channels, info.format)
    blocks: list[np.ndarray] = []
    total = 0
    try:
        with sf.SoundFile(str(file)) as handle:
            while (block := handle.read(DECODE_BLOCK_FRAMES, dtype="float32", always_2d=True)).shape[0]:
                total += block.shape[0]
                if total > limit:
                    raise AudioInputError(f"{label} is longer than {_minutes(max_duration_s)}, the limit")
                if not np.isfinite(block).all():
                    # Float WAVs can hold NaN or inf; one would poison the whole take through the VAE.
                    log.warning("%s: replacing non-finite samples in %s with silence", label, file.name)
                    np.nan_to_num(block, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
                blocks.append(_to_stereo(block, mix))
    except sf.LibsndfileError as error:
        if not blocks:
            log.warning("%s: libsndfile could not decode %s: %s", label, file.name, error)
            raise AudioInputError(
                f"{label}: {file.name!r} is damaged and could not be decoded; export it again"
            ) from error
        # Cut off or damaged part-way: keep what decoded cleanly, as players do.
        log.warning("%s: decoding %s stopped after %d frames: %s", label, file.name, total, error)
    if not blocks:
        return np.zeros((2, 0), dtype=np.float32)
    return np.concatenate(blocks, axis=1)


def _downmix_matrix(channels: int, container: str) -> np.ndarray | None:
    """``[2, channels]`` weights for a file wider than stereo, each row summing to 1 so a fold never clips."""
    if channels <= 2:
        return None
    layout = _LAYOUTS["OGG" if container == "OGG" else "WAV"][channels]
    weights = np.array([_SIDES[place] for place in layout], dtype=np.float64).T
    return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


def _to_stereo(data: np.ndarray, mix: np.ndarray | None) -> np.ndarray:
    """[frames, channels] -> [2, frames]: mono copied to both sides, stereo as is, wider folded by ``mix``."""
    if data.shape[1] == 1:
        return np.repeat(data.T, 2, axis=0)
    if mix is None:
        return np.ascontiguousarray(data.T)
    return mix @ data.T


def _resample(audio: np.ndarray, rate: int) -> np.ndarray:
    """Polyphase resampling (Kaiser-windowed FIR): exact rational ratios such as
    44.1 -> 48 kHz (160/147) without the wrap-around artefacts of FFT resampling."""
    if rate == SAMPLE_RATE:
        return np.ascontiguousarray(audio, dtype=np.float32)
    from scipy.signal import resample_poly

    common = math.gcd(rate, SAMPLE_RATE)
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
