"""Encode audio to WAV, FLAC and MP3, and tag each file with the song's details.

Audio arrays here are float32 ``[channels, samples]`` in [-1, 1] at ``SAMPLE_RATE``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from audio_io import SAMPLE_RATE

MP3_BITRATE_KBPS = 320
# LAME -q 5: 54x real time on one core against 48x at its default -q 3 (bench_finishing);
# at 320 kbps the extra noise-shaping search of -q 3 has little left to win.
MP3_QUALITY = 5
WAV_SUBTYPE = "PCM_24"
WAV_SUBTYPES = {"16": "PCM_16", "24": "PCM_24", "32f": "FLOAT"}
FLAC_SUBTYPE = "PCM_24"
ARTIST = "ACE Music Studio"


MAX_COVER_BYTES = 5 * 2**20  # cover art is embedded in every file of every take
COVER_TYPES = {b"\x89PNG\r\n\x1a\n": "image/png", b"\xff\xd8\xff": "image/jpeg"}


@dataclass(frozen=True)
class Cover:
    """Cover art to embed: the image bytes and their MIME type."""

    data: bytes
    mime: str


def read_cover(path: str | Path) -> Cover:
    """Read and check a cover image (PNG or JPEG by its bytes, at most 5 MB); ``ValueError`` otherwise."""
    file = Path(path)
    try:
        size = file.stat().st_size
    except OSError as error:
        raise ValueError(f"cover_image: cannot read {file.name!r} ({error.strerror})") from error
    if size > MAX_COVER_BYTES:
        raise ValueError(
            f"cover_image: {file.name!r} is {size / 2**20:.1f} MB; the limit is {MAX_COVER_BYTES // 2**20} MB"
        )
    data = file.read_bytes()
    for magic, mime in COVER_TYPES.items():
        if data.startswith(magic):
            return Cover(data, mime)
    raise ValueError(f"cover_image: {file.name!r} is not a PNG or JPEG image")


@dataclass(frozen=True)
class Tags:
    title: str
    lyrics: str
    seed: int
    settings_json: str
    artist: str = ARTIST
    cover: Cover | None = None


def _frames(audio: np.ndarray) -> np.ndarray:
    """[channels, samples] float -> [samples, channels] float32, clipped to full scale."""
    if audio.ndim != 2:
        raise ValueError(f"audio must be [channels, samples], got shape {audio.shape}")
    return np.clip(np.ascontiguousarray(audio.T, dtype=np.float32), -1.0, 1.0)


def write_wav(
    path: Path, audio: np.ndarray, tags: Tags, sample_rate: int = SAMPLE_RATE, subtype: str = WAV_SUBTYPE
) -> None:
    from mutagen.wave import WAVE

    _sf_write(path, _frames(audio), sample_rate, subtype=subtype, format="WAV")
    wave = WAVE(path)
    wave.add_tags()
    _fill_id3(wave.tags, tags)
    wave.save()


def write_flac(path: Path, audio: np.ndarray, tags: Tags, sample_rate: int = SAMPLE_RATE) -> None:
    from mutagen.flac import FLAC

    _sf_write(path, _frames(audio), sample_rate, subtype=FLAC_SUBTYPE, format="FLAC")
    _save_vorbis_comments(FLAC(path), tags)


def write_mp3(
    path: Path,
    audio: np.ndarray,
    tags: Tags,
    sample_rate: int = SAMPLE_RATE,
    bitrate_kbps: int = MP3_BITRATE_KBPS,
) -> None:
    import lameenc
    from mutagen.id3 import ID3

    frames = _frames(audio)
    pcm = (frames * 32767.0).round().astype("<i2")
    encoder = lameenc.Encoder()
    encoder.set_bit_rate(bitrate_kbps)
    encoder.set_in_sample_rate(sample_rate)
    encoder.set_channels(frames.shape[1])
    encoder.set_quality(MP3_QUALITY)
    data = encoder.encode(pcm.tobytes()) + encoder.flush()
    path.write_bytes(bytes(data))
    id3 = ID3()
    _fill_id3(id3, tags)
    id3.save(path)


def write_opus(path: Path, audio: np.ndarray, tags: Tags, sample_rate: int = SAMPLE_RATE) -> None:
    """Ogg Opus through libsndfile (no encoder binary needed), tagged with Vorbis comments."""
    from mutagen.oggopus import OggOpus

    _sf_write(path, _frames(audio), sample_rate, format="OGG", subtype="OPUS")
    _save_vorbis_comments(OggOpus(path), tags)


def _sf_write(path: Path, frames: np.ndarray, sample_rate: int, **options: str) -> None:
    """soundfile's write, with libsndfile's bare "System error." turned into the ``OSError``
    it is (a full disk, a read-only folder, a file-size limit), naming the file."""
    import soundfile as sf

    try:
        sf.write(path, frames, sample_rate, **options)
    except sf.LibsndfileError as error:
        raise OSError(f"{path.name}: {error} (is the disk full or the folder read-only?)") from error


Writer = Callable[[Path, np.ndarray, Tags], None]
WRITERS: dict[str, Writer] = {"wav": write_wav, "flac": write_flac, "mp3": write_mp3}


def writers_for(
    wav_bit_depth: str = "24", mp3_bitrate_kbps: int = MP3_BITRATE_KBPS, opus: bool = False
) -> dict[str, Writer]:
    """The writers for one run's export settings, keyed by file extension."""
    subtype = WAV_SUBTYPES[wav_bit_depth]
    writers: dict[str, Writer] = {
        "wav": lambda path, audio, tags: write_wav(path, audio, tags, subtype=subtype),
        "flac": write_flac,
        "mp3": lambda path, audio, tags: write_mp3(path, audio, tags, bitrate_kbps=mp3_bitrate_kbps),
    }
    if opus:
        writers["opus"] = write_opus
    return writers


def _save_vorbis_comments(file, tags: Tags) -> None:
    """FLAC and Ogg files carry the same Vorbis comment fields."""
    file["TITLE"] = tags.title
    file["ARTIST"] = tags.artist
    file["LYRICS"] = tags.lyrics
    file["SEED"] = str(tags.seed)
    file["COMMENT"] = tags.settings_json
    if tags.cover is not None:
        picture = _flac_picture(tags.cover)
        if hasattr(file, "add_picture"):  # FLAC has its own picture block
            file.add_picture(picture)
        else:  # Ogg carries it base64-encoded in a comment
            import base64

            file["METADATA_BLOCK_PICTURE"] = base64.b64encode(picture.write()).decode("ascii")
    file.save()


def _flac_picture(cover: Cover):
    from mutagen.flac import Picture

    picture = Picture()
    picture.type = 3  # front cover
    picture.mime = cover.mime
    picture.data = cover.data
    return picture


def _fill_id3(id3, tags: Tags) -> None:
    from mutagen.id3 import TIT2, TPE1, TXXX, USLT

    id3.add(TIT2(encoding=3, text=tags.title))
    id3.add(TPE1(encoding=3, text=tags.artist))
    if tags.lyrics:
        id3.add(USLT(encoding=3, lang="XXX", desc="", text=tags.lyrics))
    id3.add(TXXX(encoding=3, desc="seed", text=str(tags.seed)))
    id3.add(TXXX(encoding=3, desc="settings", text=tags.settings_json))
    if tags.cover is not None:
        from mutagen.id3 import APIC

        id3.add(APIC(encoding=3, mime=tags.cover.mime, type=3, desc="Cover", data=tags.cover.data))


def title_from_prompt(prompt: str, limit: int = 60) -> str:
    """A song title from the style prompt: its first line, cut at a word boundary."""
    line = next((part.strip() for part in prompt.splitlines() if part.strip()), "")
    if not line:
        return "Untitled"
    if len(line) <= limit:
        return line
    return line[:limit].rsplit(" ", 1)[0].rstrip(",;:") + "…"
