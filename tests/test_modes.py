from __future__ import annotations

import math

import pytest

from modes import INSTRUMENTAL_LYRICS, GenerateRequest
from validation import MAX_BATCH, RANDOM_SEED


def make(**values):
    return GenerateRequest.from_values({"prompt": "lofi piano", **values})


@pytest.mark.parametrize(
    ("values", "field", "echo"),
    [
        ({"audio_duration": 0}, "audio_duration", "0"),
        ({"audio_duration": 601}, "audio_duration", "601"),
        ({"num_inference_steps": 0}, "num_inference_steps", "0"),
        ({"vocal_language": "klingon"}, "vocal_language", "klingon"),
        ({"bpm": "fast"}, "bpm", "fast"),
        ({"batch_size": 9}, "batch_size", "9"),
        ({"shift": 0.5}, "shift", "0.5"),
        ({"guidance_scale": float("nan")}, "guidance_scale", "nan"),
        ({"seed": 1.5}, "seed", "1.5"),
        ({"keyscale": "H major"}, "keyscale", "H major"),
        ({"timesignature": "5"}, "timesignature", "5"),
        (
            {"cfg_interval_start": 0.8, "cfg_interval_end": 0.2},
            "cfg_interval_start",
            "0.8",
        ),
        ({"instrumental": "maybe"}, "instrumental", "maybe"),
        ({"lyrics": "la " * 5000}, "lyrics", "15,000"),
    ],
)
def test_bad_values_are_refused_naming_the_field(values, field, echo):
    with pytest.raises(ValueError) as error:
        make(**values)
    message = str(error.value)
    assert message.startswith(f"{field}:"), message
    assert echo in message


def test_unknown_setting_is_refused_not_ignored():
    with pytest.raises(ValueError, match=r"^num_steps: not a setting"):
        make(num_steps=8)


def test_empty_request_asks_for_a_prompt():
    with pytest.raises(ValueError, match=r"^prompt:"):
        GenerateRequest.from_values({})


def test_form_strings_are_coerced_to_field_types():
    request = make(audio_duration="30", bpm="120", seed="42", batch_size=2.0, instrumental="true")
    assert request.audio_duration == 30.0
    assert request.bpm == 120 and isinstance(request.bpm, int)
    assert request.seed == 42
    assert request.batch_size == 2 and isinstance(request.batch_size, int)
    assert request.instrumental is True


def test_empty_bpm_means_auto():
    assert make(bpm="").bpm is None
    assert make(bpm=None).bpm is None
    assert make(bpm=0).bpm is None  # a cleared number field in the browser sends 0


def test_seed_resolution_and_take_seeds():
    request = make(batch_size=3)
    assert request.seed == RANDOM_SEED
    with pytest.raises(ValueError, match=r"^seed:"):
        request.take_seeds()
    resolved = request.resolve_seed()
    assert resolved.seed != RANDOM_SEED
    assert resolved.take_seeds() == [
        resolved.seed,
        resolved.seed + 1,
        resolved.seed + 2,
    ]
    assert resolved.resolve_seed() is resolved  # a concrete seed is kept


def test_pipeline_kwargs_use_pipeline_names_and_batch_as_lists():
    request = make(
        lyrics="[verse]\nhello",
        batch_size=MAX_BATCH,
        bpm=90,
        keyscale="A minor",
        timesignature="3",
    )
    kwargs = request.pipeline_kwargs()
    assert kwargs["prompt"] == ["lofi piano"] * MAX_BATCH
    assert kwargs["lyrics"] == ["[verse]\nhello"] * MAX_BATCH
    assert kwargs["bpm"] == 90 and kwargs["keyscale"] == "A minor" and kwargs["timesignature"] == "3"
    assert kwargs["vocal_language"] == "en"
    assert "seed" not in kwargs and "batch_size" not in kwargs


def test_instrumental_follows_the_model_convention():
    kwargs = make(lyrics="[verse]\nignored words", instrumental=True).pipeline_kwargs()
    assert kwargs["lyrics"] == [INSTRUMENTAL_LYRICS]
    assert kwargs["vocal_language"] == "unknown"


def test_blank_metadata_lets_the_model_choose():
    kwargs = make().pipeline_kwargs()
    assert kwargs["bpm"] is None and kwargs["keyscale"] is None and kwargs["timesignature"] is None


def test_to_dict_round_trips():
    request = make(seed=5, bpm=100, audio_duration=math.pi * 10)
    assert GenerateRequest.from_values(request.to_dict()) == request


@pytest.mark.parametrize(
    ("typed", "saved"),
    [("C Major", "C major"), ("Am", "A minor"), ("F# minor", "F# minor"), ("F♯ minor", "F# minor"),
     ("B♭ major", "Bb major"), ("ebm", "Eb minor"), ("G sharp minor", "G# minor"), ("D", "D major")],
)  # fmt: skip
def test_typed_keys_are_saved_in_the_official_spelling(typed, saved):
    request = GenerateRequest.from_values({"prompt": "x", "keyscale": typed})
    assert request.keyscale == saved
    assert request.to_dict()["keyscale"] == saved
    assert request.pipeline_kwargs()["keyscale"] == saved


@pytest.mark.parametrize(("typed", "saved"), [("4/4", "4"), ("6/8", "6"), ("3/4", "3"), ("2/2", "2"), (" 4 ", "4")])
def test_typed_time_signatures_become_beats_per_bar(typed, saved):
    assert GenerateRequest.from_values({"prompt": "x", "timesignature": typed}).timesignature == saved


@pytest.mark.parametrize(("field", "value"), [("keyscale", "H major"), ("keyscale", "Cmaj7"), ("timesignature", "5/4")])
def test_what_is_no_key_or_meter_is_still_refused(field, value):
    with pytest.raises(ValueError, match=field):
        GenerateRequest.from_values({"prompt": "x", field: value})
