"""Finishing: loudness mastering with a true-peak limiter, fades, and silence trimming.

Audio is float ``[channels, samples]``. Loudness is measured with pyloudnorm (ITU-R
BS.1770); true peak by 4x oversampling (BS.1770-4 Annex 2). Normalising a quiet song to
-14 LUFS without a limiter clips badly (pyloudnorm only warns), so every gain goes
through the look-ahead limiter below.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from modes import DEFAULT_TARGET_LUFS, DEFAULT_TRUE_PEAK_DBTP, TARGET_LUFS_RANGE, TRUE_PEAK_RANGE_DBTP

SAMPLE_RATE = 48_000  # Hz
OVERSAMPLING = 4  # BS.1770-4 true-peak meter
MIN_LOUDNESS_S = 0.4  # one BS.1770 gating block; shorter audio has no integrated loudness
LOOKAHEAD_S = 0.005  # the limiter starts turning down this long before a peak
HOLD_S = 0.05  # and holds the reduction this long after it
RELEASE_S = 0.08  # then recovers with this time constant
MAX_PASSES = 4  # make-up gain rounds after limiting
LOUDNESS_TOLERANCE_LU = 0.3
FIR_TAPS = 48  # interpolation filter length for the true-peak meter

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
    target_lufs: float = DEFAULT_TARGET_LUFS
    true_peak_dbtp: float = DEFAULT_TRUE_PEAK_DBTP

    def validate(self) -> MasteringSettings:
        low, high = TARGET_LUFS_RANGE
        if not (math.isfinite(self.target_lufs) and low <= self.target_lufs <= high):
            raise ValueError(f"target_lufs: must be between {low:g} and {high:g} LUFS, got {self.target_lufs!r}")
        low, high = TRUE_PEAK_RANGE_DBTP
        if not (math.isfinite(self.true_peak_dbtp) and low <= self.true_peak_dbtp <= high):
            raise ValueError(f"true_peak_dbtp: must be between {low:g} and {high:g} dBTP, got {self.true_peak_dbtp!r}")
        return self


@dataclass(frozen=True)
class MasteringResult:
    audio: np.ndarray
    before: Loudness
    after: Loudness
    gain_db: float

    def summary(self) -> dict[str, object]:
        """JSON-safe figures for settings.json (silence has no loudness: null)."""

        def figures(loudness: Loudness) -> dict[str, float | None]:
            return {
                name: round(value, 2) if math.isfinite(value) else None
                for name, value in (("lufs", loudness.lufs), ("true_peak_dbtp", loudness.true_peak_dbtp))
            }

        return {"gain_db": round(self.gain_db, 2), "before": figures(self.before), "after": figures(self.after)}


def _db(value: float) -> float:
    return 20.0 * math.log10(value) if value > 0 else -math.inf


@functools.cache
def _oversampling_phases() -> np.ndarray:
    """The 4 polyphase branches of a 48-tap interpolation low-pass (the filter length
    BS.1770-4 Annex 2 describes): branch k gives the signal k/4 of a sample later."""
    from scipy.signal import firwin

    taps = firwin(FIR_TAPS, 1.0 / OVERSAMPLING) * OVERSAMPLING
    return np.ascontiguousarray(taps.reshape(-1, OVERSAMPLING).T, dtype=np.float32)


def true_peak_envelope(audio: np.ndarray) -> np.ndarray:
    """Per-sample true peak: the largest magnitude over channels, the sample itself and
    the three interpolated points after it."""
    phases = _oversampling_phases()
    delay = (FIR_TAPS // OVERSAMPLING) // 2  # the branches' group delay, in samples
    n = audio.shape[-1]
    envelope = np.abs(audio).max(axis=0).astype(np.float32)
    for channel in audio.astype(np.float32, copy=False):
        for branch in phases:
            interpolated = np.convolve(channel, branch)[delay : delay + n]
            np.maximum(envelope, np.abs(interpolated), out=envelope)
    return envelope


def _integrated_lufs(audio: np.ndarray, sample_rate: int) -> float:
    import pyloudnorm

    if audio.shape[-1] < MIN_LOUDNESS_S * sample_rate or not np.any(audio):
        return -math.inf
    return float(pyloudnorm.Meter(sample_rate).integrated_loudness(audio.T.astype(np.float64)))


def measure(audio: np.ndarray, sample_rate: int = SAMPLE_RATE, envelope: np.ndarray | None = None) -> Loudness:
    if audio.size == 0:
        return Loudness(lufs=-math.inf, true_peak_dbtp=-math.inf, sample_peak_dbfs=-math.inf)
    envelope = true_peak_envelope(audio) if envelope is None else envelope
    return Loudness(
        lufs=_integrated_lufs(audio, sample_rate),
        true_peak_dbtp=_db(float(envelope.max())),
        sample_peak_dbfs=_db(float(np.abs(audio).max())),
    )


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


def limit(
    audio: np.ndarray, ceiling_dbtp: float, sample_rate: int = SAMPLE_RATE, envelope: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """True-peak limit to ``ceiling_dbtp``; returns the audio and its new envelope.

    ``envelope`` may be passed when known (the envelope of a scaled signal is the scaled
    envelope). A last safety gain removes any hair of overshoot left by interpolation
    between gain steps, so the ceiling is a promise.
    """
    ceiling = 10.0 ** (ceiling_dbtp / 20.0)
    envelope = true_peak_envelope(audio) if envelope is None else envelope
    out = (audio * limiter_gain(envelope, ceiling, sample_rate)).astype(np.float32)
    after = true_peak_envelope(out)
    peak = float(after.max()) if out.size else 0.0
    if peak > ceiling:
        out *= np.float32(ceiling / peak)
        after *= np.float32(ceiling / peak)
    return out, after


def master(
    audio: np.ndarray, sample_rate: int = SAMPLE_RATE, settings: MasteringSettings | None = None
) -> MasteringResult:
    """Normalise to the target loudness, then true-peak limit; measure before and after.

    Limiting peaky material lowers its loudness, so the shortfall is made up and the
    limiter run again (a few passes at most).
    """
    settings = (settings or MasteringSettings()).validate()
    envelope = true_peak_envelope(audio)
    before = measure(audio, sample_rate, envelope)
    if not settings.enabled:
        return MasteringResult(audio=audio, before=before, after=before, gain_db=0.0)
    gain_db = settings.target_lufs - before.lufs if math.isfinite(before.lufs) else 0.0
    tried: list[tuple[float, float]] = []  # (gain dB, loudness after limiting)
    for _ in range(MAX_PASSES):
        gain = 10.0 ** (gain_db / 20.0)
        out, out_envelope = limit(audio * np.float32(gain), settings.true_peak_dbtp, sample_rate, envelope * gain)
        after = measure(out, sample_rate, out_envelope)
        shortfall = settings.target_lufs - after.lufs
        if not math.isfinite(shortfall) or abs(shortfall) <= LOUDNESS_TOLERANCE_LU:
            break
        tried.append((gain_db, after.lufs))
        # The limiter gives back less than 1 LU per dB of gain: a secant step through
        # the last two tries lands close in one pass; the first step assumes 1 LU/dB.
        slope = 1.0
        if len(tried) >= 2 and tried[-1][0] != tried[-2][0]:
            slope = (tried[-1][1] - tried[-2][1]) / (tried[-1][0] - tried[-2][0])
        gain_db += shortfall / min(max(slope, 0.1), 1.0)
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
