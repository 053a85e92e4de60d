"""Real speech for the lyrics check's tests, with nothing downloaded: espeak-ng speaks the lines,
pocketsphinx (its English model ships in the wheel) hears them with real word times.

pocketsphinx decodes against a JSGF grammar of the lyric lines, any of them in any order and
any number of times: it still decides from the audio which lines were spoken and where each
word falls (its free-vocabulary decoding of synthetic speech is too poor to test anything with).
"""

from __future__ import annotations

import io
import shutil
import subprocess

import numpy as np
import pytest

from backend import RunControl
from lyrics_check.align import Word, lyric_lines

ESPEAK = shutil.which("espeak-ng")
GAP_S = 0.6  # silence between spoken lines
FRAMES_PER_S = 100  # pocketsphinx's segment frames


def speak(lines: list[str], rate: int = 48_000) -> np.ndarray:
    """``lines`` spoken one after another by espeak-ng, ``[2, samples]`` float32 at ``rate``."""
    import soundfile as sf
    from scipy.signal import resample_poly

    if ESPEAK is None:
        pytest.skip("espeak-ng is not installed (apt install espeak-ng; .ci/run installs it)")
    pieces = []
    for line in lines:
        wav = subprocess.run([ESPEAK, "-v", "en-us", "-s", "140", "--stdout", line], capture_output=True, check=True)
        audio, source_rate = sf.read(io.BytesIO(wav.stdout), dtype="float32")
        pieces += [audio, np.zeros(int(source_rate * GAP_S), np.float32)]
    speech = resample_poly(np.concatenate(pieces), rate, source_rate).astype(np.float32)
    # Padded to whole seconds, as the studio's takes are (whole 25 Hz latent frames).
    speech = np.pad(speech, (0, -len(speech) % rate))
    return np.stack([speech, speech]) * 0.8


class PocketSphinxRecogniser:
    """The ``Recogniser`` interface on pocketsphinx, listening for the lyric lines."""

    def __init__(self) -> None:
        self.calls = 0

    def words(self, audio: np.ndarray, lyrics: str, control: RunControl) -> list[Word]:
        pocketsphinx = pytest.importorskip("pocketsphinx", reason="pip install pocketsphinx (requirements-dev.txt)")
        self.calls += 1
        control.check()
        lines = [" ".join(line.words) for line in lyric_lines(lyrics)]
        grammar = "#JSGF V1.0;\ngrammar lyrics;\npublic <song> = ( " + " | ".join(f"( {t} )" for t in lines) + " )* ;\n"
        decoder = pocketsphinx.Decoder(samprate=16_000, loglevel="FATAL")
        decoder.add_jsgf_string("lyrics", grammar)
        decoder.activate_search("lyrics")
        pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
        decoder.start_utt()
        decoder.process_raw(pcm, full_utt=True)
        decoder.end_utt()
        heard = []
        for segment in decoder.seg() or ():  # None when nothing in the grammar fits the audio
            word = segment.word.split("(")[0]  # "the(2)": the dictionary's second pronunciation
            if word.startswith("<") or word.startswith("["):
                continue  # <s>, </s>, <sil>, [NOISE]
            heard.append(Word(word, segment.start_frame / FRAMES_PER_S, (segment.end_frame + 1) / FRAMES_PER_S))
        return heard


class SpeechOnly:
    """A stem splitter for takes that are speech alone: the whole take is the vocal stem (the
    tiny Demucs test model's stems are noise, so real timings need the speech as it is)."""

    def separate(self, audio: np.ndarray, model: str = "", progress=None) -> dict[str, np.ndarray]:
        return {"vocals": audio}
