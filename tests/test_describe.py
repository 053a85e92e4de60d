"""Describe this song (official "transcribe"): a song read into 5 Hz codes by the DiT's tokenizer,
then described by the planner; the description fills the Cover, Extend and Edit forms."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from audio_io import SAMPLE_RATE
from backend import Backend, Cancelled, RunControl
from lm.describe import MAX_LYRICS_TOKENS, clean_lyrics, form_keyscale
from modes import CoverRequest, EditRequest, ExtendRequest
from validation import FORM_KEYSCALES, TIME_SIGNATURES, VOCAL_LANGUAGES

LYRICS_TOKENS = 12  # a random-weight LM rarely ends its lyrics by itself


@pytest.fixture(scope="module")
def song(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("describe") / "song.wav"
    t = np.arange(int(3.2 * SAMPLE_RATE)) / SAMPLE_RATE
    tone = 0.3 * np.sin(2 * np.pi * 220 * t)
    sf.write(path, np.stack([tone, tone], axis=1), SAMPLE_RATE)
    return str(path)


def test_describe_reads_codes_and_fills_every_form_with_valid_values(thinking_studio, song):
    seen: list[float] = []
    control = RunControl(lambda fraction, _message: seen.append(fraction))
    description = thinking_studio.describe(song, control, seed=3, max_lyrics_tokens=LYRICS_TOKENS)
    assert description.codes == 16  # 3.2 s: 80 latent frames pooled five at a time
    assert description.keyscale in FORM_KEYSCALES
    assert description.timesignature in TIME_SIGNATURES and description.language in VOCAL_LANGUAGES
    assert description.caption.strip()
    values = description.form_values()
    for request_type in (CoverRequest, ExtendRequest, EditRequest):
        request = request_type.from_values({**values, "src_audio": song}).validate()
        assert request.bpm == description.bpm and request.keyscale == description.keyscale
    assert seen == sorted(seen) and seen[-1] > 0.5
    # The same seed reads the same song the same way.
    again = thinking_studio.describe(song, RunControl(), seed=3, max_lyrics_tokens=LYRICS_TOKENS)
    assert again == description


def test_describe_refuses_before_model_time(studio, thinking_studio, song, tmp_path):
    with pytest.raises(ValueError, match="without a planner"):
        studio.describe(song, RunControl())
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros((SAMPLE_RATE, 2)), SAMPLE_RATE)
    with pytest.raises(ValueError, match="silent"):
        thinking_studio.describe(str(silent), RunControl())
    with pytest.raises(ValueError, match="upload"):
        thinking_studio.describe("", RunControl())
    long_song = tmp_path / "long.wav"
    sf.write(long_song, np.zeros((1_000 * 601, 1), dtype=np.int16), 1_000, subtype="PCM_16")  # refused by its header
    with pytest.raises(ValueError, match="the limit is 10:00"):
        thinking_studio.describe(str(long_song), RunControl())


def test_a_checkpoint_without_the_audio_tokenizer_is_refused_before_encoding(
    tiny_backend, tiny_planner, song, tmp_path
):
    from outputs import OutputStore
    from studio import Studio

    encoded: list[int] = []

    class NoTokenizer:
        audio_tokenizer = None

        class vae:
            @staticmethod
            def encode(*_):
                encoded.append(1)

    backend = Backend(tiny_backend.spec, device=tiny_backend.device, loader=lambda *_, **__: NoTokenizer())
    studio = Studio(backend=backend, store=OutputStore(tmp_path / "out"), planner=tiny_planner)
    with pytest.raises(ValueError, match="no audio tokenizer"):
        studio.describe(song, RunControl())
    assert not encoded


def test_cancel_stops_describing(thinking_studio, song):
    controls: list[RunControl] = []

    def cancel_once_reading(fraction: float, message: str) -> None:
        if "bpm" in message:
            controls[0].cancel()

    control = RunControl(cancel_once_reading)
    controls.append(control)
    with pytest.raises(Cancelled):
        thinking_studio.describe(song, control, max_lyrics_tokens=LYRICS_TOKENS)


@pytest.mark.parametrize(
    ("written", "form"),
    [("F\u266f minor", "F# minor"), ("B\u266d major", "Bb major"), ("Cb major", "B major"), ("E# minor", "F minor")],
)
def test_keys_are_spelled_as_the_form_offers_them(written, form):
    assert form_keyscale(written) == form


def test_lyrics_lose_the_header_and_control_characters_and_stay_bounded():
    assert clean_lyrics("# Lyric\n[verse]\nhello\x00 there\x07\n") == "[verse]\nhello there"
    assert len(clean_lyrics("la " * 10_000)) <= 8_000
    assert MAX_LYRICS_TOKENS >= 1_024


@pytest.fixture(scope="module")
def server(tiny_backend, tiny_planner, tmp_path_factory):
    from test_app_features import serve

    from outputs import OutputStore
    from studio import Studio

    studio = Studio(backend=tiny_backend, store=OutputStore(tmp_path_factory.mktemp("out")), planner=tiny_planner)
    demo, client = serve(studio)
    yield studio, client
    client.close()
    demo.close()


def test_the_describe_endpoint_answers_in_the_song_endpoints_names(server, song):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    _, client = server
    values = client.predict(src_audio=handle_file(song), seed=5, api_name="/describe")
    assert values["codes"] == 16 and 10 <= values["duration"] <= 600
    form = {name: values[name] for name in ("prompt", "lyrics", "bpm", "keyscale", "timesignature", "vocal_language")}
    request = CoverRequest.from_values({**form, "src_audio": song}).validate()
    assert request.vocal_language == values["vocal_language"] and request.keyscale in FORM_KEYSCALES
    with pytest.raises(AppError, match="silent"):
        silent = song.replace("song.wav", "silent.wav")
        sf.write(silent, np.zeros((SAMPLE_RATE, 2)), SAMPLE_RATE)
        client.predict(src_audio=handle_file(silent), api_name="/describe")


def test_the_describe_button_fills_the_tab_and_the_shared_fields(server, song):
    from ui.describe import SHARED_FIELDS, TAB_FIELDS, SongDescriber
    from ui.runs import ActiveRuns

    studio, _ = server
    filled = SongDescriber(studio, ActiveRuns()).fill_form(song)
    values = dict(zip((*TAB_FIELDS, *SHARED_FIELDS), filled, strict=True))
    EditRequest.from_values({**values, "src_audio": song}).validate()
    assert values["timesignature"] in TIME_SIGNATURES
