"""True peak: an 8x polyphase meter, and the band limit that lets it speak for any meter.

Audio is float ``[channels, samples]``. The BS.1770-4 Annex 2 meter (4x, 48 taps) under-reads
content near Nyquist, and so does any finite interpolator: a 23.9 kHz tone's samples beat at
100 Hz while the tone itself does not, and a filter reads the beat unless its transition band
is narrower than 200 Hz. So mastering first removes the top band (``band_limit``: above
20 kHz at 48 kHz, gone by 21.5 kHz, inaudible, and what MP3 encoders drop anyway); on what is
left, this meter (flat to 21.5 kHz) and every long interpolator agree to about 0.03 dB.
"""

from __future__ import annotations

import functools

import numpy as np

from audio_io import SAMPLE_RATE

OVERSAMPLING = 8  # meter points per sample
TAPS_PER_PHASE = 32  # the interpolation filter is 8 * 32 + 1 taps long
REACH = TAPS_PER_PHASE // 2  # samples it sees on each side of an interval
KAISER_BETA = 5.0  # its window: 54 dB down, transition 21.6 to 26.4 kHz at 48 kHz
GRID_BOUND = 1.0 / 7.5  # see _peaks
BLOCK_SAMPLES = 16  # bounds are kept per block; a block and its neighbours cover REACH
CHUNK_SAMPLES = 1 << 12  # the meter and the low-pass work in cache-sized pieces
PIECE_BLOCKS = 128  # where only some blocks need metering, the meter runs in pieces of this many
PASS_BAND_HZ = 20_000  # band_limit keeps the audio up to here (at 48 kHz; scaled with the rate)
STOP_BAND_HZ = 21_500  # and removes it from here on, where the meter's pass band ends
STOP_BAND_DB = 60.0
FIR_BLOCK = 64  # the low-pass computes this many outputs per matrix row
EDGE_FADE_S = 0.003  # a start or end at full level rings past the audio's ends: taper them


@functools.cache
def _interpolation_kernels() -> np.ndarray:
    """Row p - 1 (p = 1..7) holds the taps that give the signal p/8 of a sample after x[k]
    from x[k - 15 .. k + 16]: one phase each of a Kaiser-windowed sinc cut off at Nyquist."""
    from scipy.signal import firwin

    length = OVERSAMPLING * TAPS_PER_PHASE + 1
    taps = firwin(length, 1.0 / OVERSAMPLING, window=("kaiser", KAISER_BETA)) * OVERSAMPLING
    offsets = np.arange(1 - REACH, REACH + 1)  # m in x[k + m]
    phases = np.arange(1, OVERSAMPLING)[:, None]
    return np.ascontiguousarray(taps[length // 2 + phases - OVERSAMPLING * offsets], dtype=np.float32)


@functools.cache
def _reading_kernels() -> tuple[np.ndarray, np.ndarray]:
    """The points' taps on x[k - 15 .. k + 16] (x[k] and x[k + 1] included) and their bend terms'."""
    kernels = np.zeros((OVERSAMPLING + 1, 2 * REACH))
    kernels[0, REACH - 1] = kernels[OVERSAMPLING, REACH] = 1.0
    kernels[1:OVERSAMPLING] = _interpolation_kernels()
    return kernels[1:-1], 2.0 * kernels[1:-1] - kernels[:-2] - kernels[2:]


@functools.cache
def lipschitz() -> float:
    """The most a reading can move per unit that any sample within REACH moves: the
    largest sum of |taps| over the points, their bend terms included."""
    points, bends = _reading_kernels()
    return float((np.abs(points).sum(axis=1) + GRID_BOUND * np.abs(bends).sum(axis=1)).max())


@functools.cache
def _step_bound() -> tuple[float, float]:
    """(gain, per_step): a reading is at most gain times x[k] plus per_step times the largest
    step between neighbouring samples it sees, since |x[k + m] - x[k]| <= |m| steps. Tight
    where the audio is smooth (most of music), where lipschitz() is 8 dB loose."""
    points, bends = _reading_kernels()
    distance = np.abs(np.arange(1 - REACH, REACH + 1))
    per_step = np.abs(points) @ distance + GRID_BOUND * (np.abs(bends) @ distance)
    return float(np.abs(points.sum(axis=1)).max()), float(per_step.max())


def upper_bounds(audio: np.ndarray) -> np.ndarray:
    """An upper bound of each BLOCK_SAMPLES block's true peak, from its samples alone."""
    audio = audio.astype(np.float32, copy=False)
    magnitude = np.abs(audio).max(axis=0)
    step = np.abs(audio[:, 1:] - audio[:, :-1]).max(axis=0)
    steps = np.zeros_like(magnitude)
    steps[0], steps[-1] = magnitude[0], max(magnitude[-1], steps[-1])  # from and to silence past the ends
    np.maximum(steps[1:], step, out=steps[1:])  # the steps into each sample and out of it
    np.maximum(steps[:-1], step, out=steps[:-1])
    magnitude = around(per_block(magnitude, np.maximum), np.maximum)
    steps = around(per_block(steps, np.maximum), np.maximum)
    gain, per_step = _step_bound()
    return np.minimum(lipschitz() * magnitude, gain * magnitude + per_step * steps)


def _peaks(rows: np.ndarray) -> np.ndarray:
    """The true peak over intervals [k, k + 1], given x[k - 15 .. k + 16] as the columns of
    ``rows``: both samples and the 7 points between them, each raised by a parabola's bound
    on the peak between grid points."""
    left, right = rows[REACH - 1], rows[REACH]
    points = np.empty((OVERSAMPLING + 1, rows.shape[1]), np.float32)
    np.matmul(_interpolation_kernels(), rows, out=points[1:OVERSAMPLING])
    points[0], points[OVERSAMPLING] = left, right
    # A parabola through grid points a, b, c peaks at most (2b - a - c) / 8 above b; the
    # factor 1/7.5 also covers a sine's next term at 21.5 kHz (8x alone reads 0.14 dB low).
    bend = points[1:OVERSAMPLING] * np.float32(2.0)
    bend -= points[: OVERSAMPLING - 1]
    bend -= points[2:]
    np.abs(bend, out=bend)
    bend *= np.float32(GRID_BOUND)
    bend += np.abs(points[1:OVERSAMPLING])
    peak = bend.max(axis=0)
    np.maximum(peak, np.abs(left), out=peak)
    return np.maximum(peak, np.abs(right), out=peak)


def _padded(audio: np.ndarray) -> list[np.ndarray]:
    """Per channel, a view of the samples between 2 * REACH zeros each side (the audio is
    taken to be silent past its ends) whose column i holds x[k - 15 .. k + 16] for the
    interval [k, k + 1], k = i - REACH: from REACH before the audio, where the interpolator
    still rings, to REACH after."""
    n = audio.shape[-1]
    views = []
    for channel in audio.astype(np.float32, copy=False):
        padded = np.zeros(n + 4 * REACH + 1, np.float32)  # padded[j] = x[j - 2 * REACH]
        padded[2 * REACH : 2 * REACH + n] = channel
        step = padded.strides[0]
        views.append(
            np.lib.stride_tricks.as_strided(padded[1:], shape=(2 * REACH, n + 2 * REACH), strides=(step, step))
        )
    return views


def _interval_peaks(views: list[np.ndarray], at: np.ndarray | slice) -> np.ndarray:
    """The largest over channels of the true peak over the intervals ``at`` (indices i or a
    slice of them, at most CHUNK_SAMPLES); BLAS needs a contiguous copy of the columns."""
    result = None
    for view in views:
        peak = _peaks(view[:, at].copy() if isinstance(at, slice) else view[:, at])
        result = peak if result is None else np.maximum(result, peak, out=result)
    return result


def _block_peaks(views: list[np.ndarray], first: int, count: int) -> np.ndarray:
    """The peak of each of ``count`` blocks from ``first`` (the last block may reach past
    the audio's end into its ringing)."""
    start = REACH + first * BLOCK_SAMPLES
    return _interval_peaks(views, slice(start, start + count * BLOCK_SAMPLES)).reshape(-1, BLOCK_SAMPLES).max(axis=1)


def true_peak_envelope(audio: np.ndarray) -> np.ndarray:
    """Per-sample true peak: the largest magnitude over channels of the signal between this
    sample and the next, as the 8x meter reads it. What rings before the first sample and
    after the last counts towards them."""
    n = audio.shape[-1]
    if n == 0:
        return np.zeros(0, np.float32)
    channels = _padded(audio)
    count = n + 2 * REACH
    extended = np.concatenate(
        [
            _interval_peaks(channels, slice(start, min(start + CHUNK_SAMPLES, count)))
            for start in range(0, count, CHUNK_SAMPLES)
        ]
    )
    inside = extended[REACH : REACH + n].copy()
    inside[0] = max(inside[0], extended[: REACH + 1].max())
    inside[-1] = max(inside[-1], extended[REACH + n - 1 :].max())
    return inside


def true_peak_max(audio: np.ndarray, upper: np.ndarray, lower: np.ndarray) -> float:
    """The true peak of ``audio`` (its envelope's largest value), metering only the pieces
    that may hold it: ``upper`` and ``lower`` bound each BLOCK_SAMPLES block's peak. Pieces
    of PIECE_BLOCKS go highest bound first, until the bound falls under the peak found."""
    n = audio.shape[-1]
    views = _padded(audio)
    best = float(_interval_peaks(views, np.r_[0:REACH, n + REACH : n + 2 * REACH]).max())
    pieces = per_piece(upper)
    candidates = np.flatnonzero(pieces >= max(best, float(lower.max())))
    for piece in candidates[np.argsort(pieces[candidates])[::-1]]:
        if pieces[piece] < best:
            break
        first = piece * PIECE_BLOCKS
        best = max(best, float(_block_peaks(views, first, min(PIECE_BLOCKS, upper.size - first)).max()))
    return best


def per_piece(blocks: np.ndarray) -> np.ndarray:
    """The largest of each PIECE_BLOCKS blocks."""
    return np.maximum.reduceat(blocks, np.arange(0, blocks.size, PIECE_BLOCKS))


class BlockPeaks:
    """Per-block true peaks of ``audio``, metered only where asked: elsewhere upper_bounds().
    A limiter needs exact peaks only where the bound times its gain could pass the ceiling
    (about a fifth of a song at -14 LUFS)."""

    def __init__(self, audio: np.ndarray) -> None:
        self._views = _padded(audio)
        n = audio.shape[-1]
        self.upper = upper_bounds(audio)
        self.values = self.upper.copy()
        self._metered = np.zeros(-(-self.upper.size // PIECE_BLOCKS), bool)
        self._meter(0)
        self._meter(self._metered.size - 1)
        ends = _interval_peaks(self._views, np.r_[0:REACH, n + REACH : n + 2 * REACH])
        self.values[0] = max(self.values[0], ends[:REACH].max())  # what rings before the start
        self.values[-1] = max(self.values[-1], ends[REACH:].max())

    def meter_above(self, level: float) -> np.ndarray:
        """The peaks, exact in every piece of PIECE_BLOCKS that holds a bound over ``level``."""
        for piece in np.flatnonzero((per_piece(self.upper) > level) & ~self._metered):
            self._meter(piece)
        return self.values

    def metered(self) -> np.ndarray:
        """Which blocks hold exact peaks."""
        return np.repeat(self._metered, PIECE_BLOCKS)[: self.values.size]

    def _meter(self, piece: int) -> None:
        first = piece * PIECE_BLOCKS
        count = min(PIECE_BLOCKS, self.values.size - first)
        self.values[first : first + count] = _block_peaks(self._views, first, count)
        self._metered[piece] = True


def per_block(values: np.ndarray, combine: np.ufunc) -> np.ndarray:
    """``combine`` (np.maximum, np.minimum, np.add) over each BLOCK_SAMPLES block, the last
    one possibly short (reduceat is the fastest numpy way to reduce short runs)."""
    return combine.reduceat(values, np.arange(0, values.size, BLOCK_SAMPLES))


def around(blocks: np.ndarray, combine: np.ufunc) -> np.ndarray:
    """``combine`` over each block and its two neighbours: all that an interval sees."""
    out = blocks.copy()
    combine(out[1:], blocks[:-1], out=out[1:])
    combine(out[:-1], blocks[1:], out=out[:-1])
    return out


@functools.cache
def _low_pass(sample_rate: int) -> np.ndarray:
    """A linear-phase low-pass as a Toeplitz matrix: a row of FIR_BLOCK + taps - 1 samples
    times it gives FIR_BLOCK filtered ones (one matrix product, not a slow convolve)."""
    from scipy.signal import firwin, kaiserord

    scale = sample_rate / SAMPLE_RATE
    count, beta = kaiserord(STOP_BAND_DB, (STOP_BAND_HZ - PASS_BAND_HZ) * scale / (sample_rate / 2.0))
    count |= 1  # odd: a whole-sample delay, removed by band_limit
    taps = firwin(count, (PASS_BAND_HZ + STOP_BAND_HZ) / 2.0 * scale, window=("kaiser", beta), fs=sample_rate)
    matrix = np.zeros((FIR_BLOCK + count - 1, FIR_BLOCK), np.float32)
    for column in range(FIR_BLOCK):
        matrix[column : column + count, column] = taps[::-1]
    return matrix


def band_limit(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The audio without its top band (above 20 kHz at 48 kHz), its first and last
    EDGE_FADE_S tapered so that nothing rings past its ends; float32, same shape."""
    matrix = _low_pass(sample_rate)
    width = matrix.shape[0]
    delay = (width - FIR_BLOCK) // 2
    n = audio.shape[-1]
    blocks = -(-n // FIR_BLOCK)
    fade = min(round(EDGE_FADE_S * sample_rate), n // 2)
    ramp = np.sin(0.5 * np.pi * (np.arange(fade) + 0.5) / fade).astype(np.float32) ** 2
    out = np.empty(audio.shape, np.float32)
    for channel, source in zip(out, audio, strict=True):
        padded = np.zeros(blocks * FIR_BLOCK + width, np.float32)
        padded[delay : delay + n] = source
        padded[delay : delay + fade] *= ramp
        padded[delay + n - fade : delay + n] *= ramp[::-1]
        step = padded.strides[0]
        rows = np.lib.stride_tricks.as_strided(padded, shape=(blocks, width), strides=(FIR_BLOCK * step, step))
        for first in range(0, blocks, CHUNK_SAMPLES // FIR_BLOCK):
            last = min(blocks, first + CHUNK_SAMPLES // FIR_BLOCK)
            filtered = (rows[first:last].copy() @ matrix).reshape(-1)
            end = min(last * FIR_BLOCK, n)
            channel[first * FIR_BLOCK : end] = filtered[: end - first * FIR_BLOCK]
    return out
