"""Finishing: loudness mastering with a true-peak limiter, fades, and silence trimming.

Audio is float ``[channels, samples]``. Loudness is measured with pyloudnorm (ITU-R
BS.1770); true peak by 4x oversampling (BS.1770-4 Annex 2). Normalising a quiet song to
-14 LUFS without a limiter clips badly (pyloudnorm only warns), so every gain goes
through the look-ahead limiter below.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SAMPLE_RATE = 48_000  # Hz
OVERSAMPLING = 4  # BS.1770-4 true-peak meter
MIN_LOUDNESS_S = 0.4  # one BS.1770 gating block; shorter audio has no integrated loudness
LOOKAHEAD_S = 0.005  # the limiter starts turning down this long before a peak
HOLD_S = 0.05  # and holds the reduction this long after it
RELEASE_S = 0.08  # then recovers with this time constant
TARGET_RANGE_LUFS = (-30.0, -5.0)
CEILING_RANGE_DBTP = (-6.0, 0.0)
MAX_PASSES = 4  # make-up gain rounds after limiting
LOUDNESS_TOLERANCE_LU = 0.2
BLOCK_SAMPLES = 1 << 20  # true-peak envelope in blocks: bounded memory for 10-minute songs
_FILTER_MARGIN = 64  # samples of context each side of a block for the polyphase filter

# Published loudness targets (integrated LUFS, true-peak ceiling dBTP).
PRESETS: dict[str, tuple[float, float]] = {
    "Streaming (Spotify, YouTube, Tidal)": (-14.0, -1.0),
    "Apple Music": (-16.0, -1.0),
    "Broadcast (EBU R128)": (-23.0, -1.0),
    "Loud (club, DJ)": (-9.0, -1.0),
}


@dataclass(frozen=True)
class Loudness:
    lufs: float  # integrated loudness; -inf for silence or audio under 0.4 s
    true_peak_dbtp: float
    sample_peak_dbfs: float


@dataclass(frozen=True)
class MasteringSettings:
    enabled: bool = True
    target_lufs: float = -14.0
    true_peak_dbtp: float = -1.0

    def validate(self) -> MasteringSettings:
        low, high = TARGET_RANGE_LUFS
        if not (math.isfinite(self.target_lufs) and low <= self.target_lufs <= high):
            raise ValueError(f"target_lufs: must be between {low:g} and {high:g} LUFS, got {self.target_lufs!r}")
        low, high = CEILING_RANGE_DBTP
        if not (math.isfinite(self.true_peak_dbtp) and low <= self.true_peak_dbtp <= high):
            raise ValueError(f"true_peak_dbtp: must be between {low:g} and {high:g} dBTP, got {self.true_peak_dbtp!r}")
        return self


@dataclass(frozen=True)
class MasteringResult:
    audio: np.ndarray
    before: Loudness
    after: Loudness
    gain_db: float


def _db(value: float) -> float:
    return 20.0 * math.log10(value) if value > 0 else -math.inf


def true_peak_envelope(audio: np.ndarray) -> np.ndarray:
    """Per-sample true peak (max over channels and the 4 oversampled points), blockwise."""
    from scipy.signal import resample_poly

    n = audio.shape[-1]
    envelope = np.empty(n, dtype=np.float64)
    for start in range(0, n, BLOCK_SAMPLES):
        stop = min(start + BLOCK_SAMPLES, n)
        lo, hi = max(start - _FILTER_MARGIN, 0), min(stop + _FILTER_MARGIN, n)
        up = resample_poly(audio[:, lo:hi].astype(np.float32), OVERSAMPLING, 1, axis=1)
        up = np.abs(up[:, (start - lo) * OVERSAMPLING : (stop - lo) * OVERSAMPLING]).max(axis=0)
        envelope[start:stop] = np.maximum(up.reshape(-1, OVERSAMPLING).max(axis=1), np.abs(audio[:, start:stop]).max(0))
    return envelope


def measure(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Loudness:
    import pyloudnorm

    sample_peak = float(np.abs(audio).max()) if audio.size else 0.0
    true_peak = float(true_peak_envelope(audio).max()) if audio.size else 0.0
    lufs = -math.inf
    if audio.shape[-1] >= MIN_LOUDNESS_S * sample_rate and sample_peak > 0:
        lufs = float(pyloudnorm.Meter(sample_rate).integrated_loudness(audio.T.astype(np.float64)))
    return Loudness(lufs=lufs, true_peak_dbtp=_db(true_peak), sample_peak_dbfs=_db(sample_peak))


def limiter_gain(envelope: np.ndarray, ceiling: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A smooth gain curve that keeps ``envelope * gain`` at or below ``ceiling``.

    The needed gain is held over [n - hold, n + look-ahead] (a minimum filter), averaged
    over the look-ahead (a ramp that still reaches the needed gain at every peak, since
    every point averaged covers it), and its recovery slowed by a one-pole release; the
    minimum of two valid curves is valid, so the guarantee survives the smoothing.
    """
    from scipy.ndimage import minimum_filter1d, uniform_filter1d
    from scipy.signal import lfilter

    look = max(int(LOOKAHEAD_S * sample_rate), 1)
    hold = max(int(HOLD_S * sample_rate), look)
    needed = np.minimum(1.0, ceiling / np.maximum(envelope, 1e-12))
    size = look + hold + 1
    # minimum_filter1d's window is [n - size//2 - origin, ...]: shift it to [n - hold, n + look].
    held = minimum_filter1d(needed, size=size, origin=hold - size // 2, mode="nearest")
    ramp = uniform_filter1d(held, size=look, mode="nearest")
    alpha = math.exp(-1.0 / (RELEASE_S * sample_rate))
    released = lfilter([1.0 - alpha], [1.0, -alpha], ramp, zi=[alpha * ramp[0]])[0]
    return np.minimum(ramp, released)


def limit(audio: np.ndarray, ceiling_dbtp: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """True-peak limit to ``ceiling_dbtp``; a last safety gain makes the ceiling a promise."""
    ceiling = 10.0 ** (ceiling_dbtp / 20.0)
    gain = limiter_gain(true_peak_envelope(audio), ceiling, sample_rate)
    out = audio * gain
    # Interpolation between the gain steps can leave a hair of overshoot: remove it.
    peak = float(true_peak_envelope(out).max()) if out.size else 0.0
    if peak > ceiling:
        out = out * (ceiling / peak)
    return out


def master(
    audio: np.ndarray, sample_rate: int = SAMPLE_RATE, settings: MasteringSettings | None = None
) -> MasteringResult:
    """Normalise to the target loudness, then true-peak limit; measure before and after."""
    settings = (settings or MasteringSettings()).validate()
    before = measure(audio, sample_rate)
    if not settings.enabled:
        return MasteringResult(audio=audio, before=before, after=before, gain_db=0.0)
    if not math.isfinite(before.lufs):
        out = limit(audio.astype(np.float64), settings.true_peak_dbtp, sample_rate).astype(np.float32)
        return MasteringResult(audio=out, before=before, after=measure(out, sample_rate), gain_db=0.0)
    gain_db = settings.target_lufs - before.lufs
    for _ in range(MAX_PASSES):
        boosted = audio.astype(np.float64) * 10.0 ** (gain_db / 20.0)
        out = limit(boosted, settings.true_peak_dbtp, sample_rate).astype(np.float32)
        after = measure(out, sample_rate)
        # Limiting peaky material lowers its loudness: make up the shortfall and limit again.
        shortfall = settings.target_lufs - after.lufs
        if abs(shortfall) <= LOUDNESS_TOLERANCE_LU or not math.isfinite(shortfall):
            break
        gain_db += shortfall
    return MasteringResult(audio=out, before=before, after=after, gain_db=gain_db)


def fade(audio: np.ndarray, sample_rate: int, fade_in_s: float = 0.0, fade_out_s: float = 0.0) -> np.ndarray:
    """Equal-power (quarter-sine) fades at the ends."""
    total = audio.shape[-1]
    fade_in, fade_out = round(fade_in_s * sample_rate), round(fade_out_s * sample_rate)
    for name, value in (("fade_in_s", fade_in_s), ("fade_out_s", fade_out_s)):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{name}: must be 0 or more seconds, got {value!r}")
    if fade_in + fade_out > total:
        raise ValueError(f"fade_in_s: the fades ({fade_in_s:g} s + {fade_out_s:g} s) are longer than the audio")
    out = audio.copy()
    if fade_in:
        out[:, :fade_in] *= np.sin(0.5 * np.pi * np.arange(fade_in) / fade_in)
    if fade_out:
        out[:, total - fade_out :] *= np.cos(0.5 * np.pi * (np.arange(fade_out) + 1) / fade_out)
    return out


def trim_silence(audio: np.ndarray, sample_rate: int, threshold_db: float = -60.0, keep_s: float = 0.05) -> np.ndarray:
    """Cut leading and trailing silence below ``threshold_db``, keeping ``keep_s`` of it."""
    level = np.abs(audio).max(axis=0)
    loud = np.flatnonzero(level > 10.0 ** (threshold_db / 20.0))
    if loud.size == 0:
        return audio[:, :0]
    keep = round(keep_s * sample_rate)
    return audio[:, max(loud[0] - keep, 0) : min(loud[-1] + 1 + keep, audio.shape[-1])]
