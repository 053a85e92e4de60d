"""Errors a client can provoke: escaped and short (no markup reaches the page), and in words
(a named field and what is wrong, never a raw Python exception or an empty 'Error')."""

from __future__ import annotations

import dataclasses
import math
import typing
from pathlib import Path

import gradio as gr
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_app import free_port

import app
from lyrics_lm import LyricsRequest
from modes import REQUEST_TYPES, CoverRequest, EditRequest, FlowEditRequest, GenerateRequest
from outputs import OutputStore
from studio import Studio
from ui.library import stems_handler
from ui.runs import ActiveRuns
from validation import ECHO_CHARS, MAX_SHORT_CHARS, echo, safe_message
from variations import VaryRequest

ROOT = Path(__file__).resolve().parents[1]
MARKUP = '<form action="https://evil.example/"><input name="password"></form>'
ALL_REQUEST_TYPES = [*REQUEST_TYPES.values(), LyricsRequest, VaryRequest]
MAX_MESSAGE = 300


@pytest.fixture(scope="module")
def server(tiny_backend, tmp_path_factory):
    from serving.cli import make_lyrics_writer

    store = OutputStore(tmp_path_factory.mktemp("outputs"))
    studio = Studio(backend=tiny_backend, store=store, lyrics=make_lyrics_writer(None, tiny=True))
    port = free_port()
    demo = app.launch(studio, "127.0.0.1", port, preload=False, prevent_thread_lock=True, quiet=True)
    client = Client(f"http://127.0.0.1:{port}/", verbose=False)
    yield studio, client
    client.close()
    demo.close()


def refusal(client: Client, api_name: str, **values) -> str:
    with pytest.raises(AppError) as error:
        client.predict(api_name=api_name, **values)
    return str(error.value)


# ---- markup and size in echoed values (finding 5)


@pytest.mark.parametrize("field", ["bpm", "keyscale", "lora_triggers"])
def test_markup_in_a_value_comes_back_escaped(server, field):
    studio, client = server
    before = sorted(studio.store.root.iterdir())
    message = refusal(client, "/generate", prompt="x", **{field: MARKUP})
    assert message.startswith(f"{field}:"), message
    assert "&lt;form" in message and "<form" not in message and "<" not in message
    assert sorted(studio.store.root.iterdir()) == before


def test_a_megabyte_value_comes_back_shortened(server):
    _, client = server
    message = refusal(client, "/generate", prompt="x", bpm="9" * 1_000_000)
    assert message.startswith("bpm: must be a whole number, got '9999"), message[:200]
    assert "(1,000,000 characters)" in message and len(message) < MAX_MESSAGE


def test_echo_cuts_after_escaping_and_never_leaves_half_an_entity():
    shown = echo("<" * 1000)
    assert "<" not in shown and shown.endswith("… (1,000 characters)")
    assert len(shown) <= ECHO_CHARS + len("… (1,000 characters)")
    assert shown.split("…")[0].endswith(("&lt;", "'"))
    assert echo(10**5000) == "a 5000-digit number"  # repr of such an int is refused by Python itself


def test_messages_of_other_exceptions_are_made_markup_free_once():
    assert (
        safe_message(f"could not read {MARKUP}") == "could not read &lt;form" + safe_message(MARKUP)[len("&lt;form") :]
    )
    assert "<" not in safe_message(MARKUP) and safe_message(safe_message(MARKUP)) == safe_message(MARKUP)
    already = f"keyscale: {echo('R&B <b>')} is not a key"
    assert safe_message(already) == already  # echo's escaping is kept, not doubled
    assert len(safe_message("x" * 100_000)) <= 1_001


# ---- errors in words (finding 8)


def test_stems_take_that_is_not_a_number(server):
    _, client = server
    _, settings = client.predict(prompt="x", audio_duration=10, seed=1, num_inference_steps=2, api_name="/generate")
    message = refusal(client, "/stems", run_id=settings["run_id"], take="x", stem_model="demucs_unittest")
    assert message == "take: must be a whole number, got 'x'"
    message = refusal(client, "/stems", run_id=settings["run_id"], take=1, stem_model=MARKUP)
    assert message.startswith("stem_model: must be one of") and "<" not in message


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("lines_per_section", "many", "lines_per_section: must be a whole number, got 'many'"),
        ("max_new_tokens", "1.5", "max_new_tokens: must be a whole number, got '1.5'"),
        ("temperature", "hot", "temperature: must be a number, got 'hot'"),
        ("top_p", "", "top_p: must be a number, got ''"),
        ("seed", "nan", "seed: must be a whole number, got 'nan'"),
        ("language", MARKUP, "language: '&lt;form"),
    ],
)
def test_lyrics_sliders_with_non_numbers(server, field, value, expected):
    _, client = server
    message = refusal(client, "/lyrics", brief="a song", **{field: value})
    assert message.startswith(expected), message


@pytest.mark.parametrize(
    ("seed", "expected"),
    [
        ("inf", "seed: must be a whole number, got 'inf'"),
        ("-inf", "seed: must be a whole number, got '-inf'"),
        ("nan", "seed: must be a whole number, got 'nan'"),
        (1e30, "seed: must be between 0 and"),
        ("1e30", "seed: must be between 0 and"),
    ],
)
def test_seeds_that_are_not_seeds(server, seed, expected):
    _, client = server  # JSON carries no inf or nan: a client sends them as text
    assert refusal(client, "/generate", prompt="x", seed=seed).startswith(expected)


def repr_id(value: object) -> str:
    return "huge int" if isinstance(value, int) and value > 10**100 else repr(value)


@pytest.mark.parametrize("seed", [math.inf, -math.inf, math.nan, 1e30, 10**30, 10**5000], ids=repr_id)
def test_seeds_that_are_not_seeds_from_python(seed):
    with pytest.raises(ValueError, match=r"^seed: must be (a whole number|between 0 and)") as error:
        GenerateRequest.from_values({"prompt": "x", "seed": seed})
    assert len(str(error.value)) < MAX_MESSAGE


def test_a_file_input_sent_as_a_plain_string_is_never_read(server):
    studio, client = server
    before = sorted(studio.store.root.iterdir())
    for value in ("/etc/passwd", "hello"):
        # Refused in words by the request's validation; the path is never opened.
        assert refusal(client, "/cover", src_audio=value, prompt="x").startswith("src_audio: not an uploaded file")
    assert sorted(studio.store.root.iterdir()) == before


@pytest.mark.parametrize("value", [{"path": "/etc/passwd"}, ["/etc/passwd"], 7])
def test_a_file_field_that_is_not_a_file_path_is_not_an_uploaded_file(value):
    with pytest.raises(ValueError, match=r"^src_audio: not an uploaded file"):
        CoverRequest.from_values({"src_audio": value})


@pytest.mark.parametrize("field", ["prompt", "lyrics", "keyscale", "loras", "src_audio", "track_name"])
def test_a_null_character_is_refused_by_name(field):
    values = {"src_audio": "song.wav", "prompt": "x", "task_type": "extract", "track_name": "drums"}
    values[field] = "a\x00b"
    with pytest.raises(ValueError, match=rf"^{field}: holds a null character"):
        EditRequest.from_values(values)


def test_a_null_character_over_the_api(server):
    _, client = server
    assert refusal(client, "/generate", prompt="lofi\x00piano").startswith("prompt: holds a null character")


def text_fields(cls: type) -> list[str]:
    hints = typing.get_type_hints(cls)
    return [f.name for f in dataclasses.fields(cls) if hints[f.name] in (str, tuple[str, ...])]


@pytest.mark.parametrize(
    ("cls", "field"), [(cls, field) for cls in ALL_REQUEST_TYPES for field in text_fields(cls)], ids=str
)
def test_every_text_field_has_a_length_limit(cls, field):
    limit = getattr(cls, "TEXT_LIMITS", {}).get(field, MAX_SHORT_CHARS)
    with pytest.raises(ValueError) as error:
        cls.from_values({field: "x" * (limit + 1)})
    message = str(error.value)
    # Required fields may be named first; a field of its own is named with its limit.
    if message.startswith(f"{field}:"):
        assert f"over the {limit:,}-character limit" in message or field in ("prompt", "brief")
    filled = {"src_audio": "song.wav", "prompt": "x", "lyrics": "x", "brief": "x", "parent_run_id": "r"}
    values = {name: value for name, value in filled.items() if name in {f.name for f in dataclasses.fields(cls)}}
    with pytest.raises(ValueError, match=rf"^{field}: {limit + 1:,} characters is over the {limit:,}-character"):
        cls.from_values({**values, field: "x" * (limit + 1)})


def test_flow_edit_without_an_end_saves_the_segment_it_used():
    base = {"src_audio": "song.wav", "prompt": "rock"}
    for end in (None, "", 0, -1, "-1"):
        request = FlowEditRequest.from_values({**base, "repainting_end": end})
        assert (request.to_dict()["repainting_start"], request.to_dict()["repainting_end"]) == (0.0, None)
    with pytest.raises(ValueError, match=r"^repainting_start: 5 s needs a repainting_end"):
        FlowEditRequest.from_values({**base, "repainting_start": 5, "repainting_end": -1})
    for start in (math.nan, math.inf, -3):
        with pytest.raises(ValueError, match=r"^repainting_start: must be"):
            FlowEditRequest.from_values({**base, "repainting_start": start})
    segment = FlowEditRequest.from_values({**base, "repainting_start": 2, "repainting_end": 6})
    assert (segment.repainting_start, segment.repainting_end) == (2.0, 6.0)


def test_stems_on_a_full_disk_say_so(on_a_full_disk):
    """RLIMIT_FSIZE makes every write past 64 kB fail as a full disk does (EFBIG), in a child process."""
    stdout = on_a_full_disk(
        """
        from modes import GenerateRequest
        from ui.library import stems_handler
        from ui.runs import ActiveRuns
        request = GenerateRequest(prompt="x", audio_duration=10, seed=1, num_inference_steps=2)
        run = studio.generate(request, RunControl())
        """,
        """
        try:
            stems_handler(studio, ActiveRuns())(run.run_id, 1, "demucs_unittest")
        except gr.Error as error:
            print("ERROR:", error.title, "|", error.message)
        print("LEFT:", sorted(p.name for p in run.folder.iterdir() if "stems" in p.name))
        """,
    )
    assert "ERROR: Disk problem | Could not write the stems: drums.flac" in stdout, stdout
    assert "disk full" in stdout or "File too large" in stdout
    assert "LEFT: []" in stdout


def test_stems_handler_refuses_a_bad_take_before_any_work(studio):
    handler = stems_handler(studio, ActiveRuns())
    for take, expected in (("x", "take: must be a whole number, got 'x'"), (math.nan, "take: must be a whole")):
        with pytest.raises(gr.Error) as error:
            handler("some-run", take, "demucs_unittest")
        assert error.value.message.startswith(expected)


# ---- every request type, random values


WILD = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from([MARKUP, "<" * 5_000, "9" * 100_000, "a\x00b", "nan", "inf", "1e30", "-1", "0", " "]),
    st.lists(st.text(max_size=5), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_values_raise_only_worded_value_errors(data):
    cls = data.draw(st.sampled_from(ALL_REQUEST_TYPES))
    names = [f.name for f in dataclasses.fields(cls)]
    values = data.draw(st.dictionaries(st.sampled_from(names), WILD, max_size=4))
    try:
        cls.from_values(values)
    except ValueError as error:
        message = str(error)
        assert message.split(":", 1)[0] in names, message[:200]
        assert len(message) <= MAX_MESSAGE, message
        assert "<" not in message, message


def test_a_shared_loras_name_shows_as_text_not_as_a_link_or_markup():
    """On a Space the LoRA store is shared: a name one visitor gives is read in others' pages."""
    from ui.lora_panel import describe_stack
    from ui.words import literal

    name = "[win a prize](https://x.example) **now** <img src=x onerror=alert(1)>"
    shown = describe_stack("abc:1", {"abc": name})
    assert "](https://" not in shown and "<img" not in shown and "**now**" not in shown
    assert "\\[win a prize\\]\\(https://x\\.example\\)" in shown and "&lt;img" in shown
    assert literal("tape warm v1") == "tape warm v1"  # a plain name reads as itself
    import markdown_it

    text = markdown_it.MarkdownIt().render(literal(name))
    assert "<a " not in text and "<strong>" not in text and "<img" not in text
    assert "[win a prize](https://x.example) **now** &lt;img src=x onerror=alert(1)&gt;" in text
