"""The lyrics writer on a tiny random-weight Qwen2 chat model, loaded through both real backends.

Random weights write gibberish; what is checked is the plumbing: the prompt never comes back,
the text only grows, a seed repeats its text, cancel stops, and the tidying of real-world replies.
"""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from backend import Cancelled, ModelUnavailableError, RunControl
from lm.lyrics_tidy import LyricsTidier, normalise_lyrics, section_tag
from lm.session import LoadedLM
from lyrics_lm import (
    DEFAULT_STRUCTURE,
    LYRICS_MODELS,
    MLX_LYRICS_MODELS,
    STRUCTURE_PRESETS,
    SYSTEM_PROMPT,
    LyricsLM,
    LyricsRequest,
    build_messages,
    resolve_lyrics_model,
)
from tools.tiny_model import build_tiny_lyrics_lm
from validation import MAX_SEED, VOCAL_LANGUAGES

ROOT = Path(__file__).resolve().parent.parent
BACKENDS = ["transformers", "mlx"]
# Words no tokenizer merge of the tiny corpus spells, so random output cannot echo them.
BRIEF = "a quokka smuggling marmalade across the Zanzibar archipelago by zeppelin"
TOKENS = 160


def request(**values) -> LyricsRequest:
    return LyricsRequest.from_values({"brief": BRIEF, "seed": 11, "max_new_tokens": TOKENS, **values})


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    return build_tiny_lyrics_lm(tmp_path_factory.mktemp("lyrics-lm"))


@pytest.fixture(scope="session")
def writers(model_dir):
    """One writer per backend, each loaded through its library's own ``from_pretrained``/``load``."""
    loaded = {}
    for backend in BACKENDS:
        writer = LyricsLM(str(model_dir), backend=backend, device="cpu")
        writer.load()
        loaded[backend] = writer
    return loaded


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_reply_is_only_new_tokens_and_never_the_prompt(writers, backend):
    writer = writers[backend]
    req = request()
    tokenizer = writer.load().tokenizer
    prompt = writer.prompt_ids(req)
    ids = list(writer.tokens(req))
    # The tiny model's end-of-turn tokens are made unlikely, so it writes up to the limit.
    assert len(ids) == TOKENS
    assert ids[: len(prompt)] != prompt
    lyrics = list(writer.write(req))[-1]
    assert lyrics == normalise_lyrics(tokenizer.decode(ids, skip_special_tokens=True))
    raw = tokenizer.decode(ids)
    user = build_messages(req)[1]["content"]
    for text in (raw, lyrics):
        assert SYSTEM_PROMPT not in text and SYSTEM_PROMPT[:40] not in text
        assert user not in text and BRIEF not in text and "zeppelin" not in text
        assert "<|im_start|>" not in text and "ACE-Step" not in text


@pytest.mark.parametrize("backend", BACKENDS)
def test_streamed_text_only_grows_and_ends_as_the_whole(writers, backend):
    req = request(max_new_tokens=400)
    chunks = list(writers[backend].write(req))
    assert len(chunks) >= 5
    for before, after in itertools.pairwise(chunks):
        assert after.startswith(before) and len(after) > len(before)
    ids = list(writers[backend].tokens(req))
    assert chunks[-1] == normalise_lyrics(writers[backend].load().tokenizer.decode(ids, skip_special_tokens=True))


@pytest.mark.parametrize("backend", BACKENDS)
def test_same_seed_same_lyrics_other_seed_other_lyrics(writers, backend):
    writer = writers[backend]
    first = list(writer.tokens(request(seed=5)))
    assert list(writer.tokens(request(seed=5))) == first
    assert list(writer.tokens(request(seed=6))) != first
    assert list(writer.write(request(seed=5)))[-1] == list(writer.write(request(seed=5)))[-1]


def test_greedy_decoding_ignores_the_seed(writers):
    writer = writers["transformers"]
    assert list(writer.tokens(request(temperature=0, seed=1))) == list(writer.tokens(request(temperature=0, seed=2)))


def test_mlx_writes_from_a_worker_thread(writers):
    """Gradio runs handlers in worker threads; mlx streams belong to the thread that made them."""
    writer = writers["mlx"]  # loaded on the main thread, used from another, as in the studio
    expected = list(writer.write(request(seed=3)))[-1]
    result: dict[str, object] = {}

    def work() -> None:
        try:
            result["lyrics"] = list(writer.write(request(seed=3)))[-1]
        except Exception as error:
            result["error"] = error

    worker = threading.Thread(target=work)
    worker.start()
    worker.join(timeout=120)
    assert "error" not in result, result.get("error")
    assert result["lyrics"] == expected


@pytest.mark.parametrize("backend", BACKENDS)
def test_cancel_stops_the_writing(writers, backend):
    reports: list[tuple[float, str]] = []
    control = RunControl(lambda fraction, message: reports.append((fraction, message)))
    stream = writers[backend].write(request(max_new_tokens=2_000), control)
    next(stream)
    control.cancel()
    with pytest.raises(Cancelled):
        list(stream)
    assert all(fraction < 0.05 for fraction, _ in reports)  # stopped within a line of 2,000 tokens
    # Cancelled from the progress callback, as the studio's Cancel button does, between two lines.
    control = RunControl(lambda fraction, message: control.cancel())
    with pytest.raises(Cancelled):
        list(writers[backend].tokens(request(max_new_tokens=2_000), control))
    # The run lock was released: the next run goes ahead.
    assert len(list(writers[backend].tokens(request(max_new_tokens=64)))) == 64


def test_progress_reaches_the_end(writers):
    reports: list[tuple[float, str]] = []
    list(writers["transformers"].write(request(), RunControl(lambda *report: reports.append(report))))
    fractions = [fraction for fraction, _ in reports]
    assert fractions == sorted(fractions) and reports[-1] == (1.0, "Lyrics written")


@pytest.mark.parametrize("backend", BACKENDS)
def test_tokens_per_second(writers, backend, capsys):
    """A figure, not a check: the tiny model's decode speed on this machine's CPU."""
    writer = writers[backend]
    started = time.perf_counter()
    count = len(list(writer.tokens(request(max_new_tokens=500))))
    seconds = time.perf_counter() - started
    with capsys.disabled():
        print(f"\n[lyrics_lm] tiny Qwen2 on {backend} (CPU): {count / seconds:,.0f} tokens/s")
    assert count == 500


# ---- loading


def test_a_missing_model_says_what_to_do(tmp_path):
    writer = LyricsLM(str(tmp_path / "no-such-model"), backend="transformers")
    with pytest.raises(ModelUnavailableError, match="could not be loaded with transformers") as raised:
        writer.load()
    assert str(tmp_path / "no-such-model") in str(raised.value)
    assert "hf download" in str(raised.value) and "Qwen2.5-3B-Instruct" in str(raised.value)
    assert not writer.is_loaded


def test_a_loader_failure_names_the_model_and_a_smaller_one():
    def out_of_memory(source, backend, device):
        raise MemoryError("cannot allocate 15 GB")

    writer = LyricsLM(loader=out_of_memory, backend="transformers")
    with pytest.raises(ModelUnavailableError) as raised:
        list(writer.write(request()))
    message = str(raised.value)
    assert "Qwen/Qwen2.5-7B-Instruct" in message and "cannot allocate 15 GB" in message
    assert "smaller model (Qwen2.5-3B-Instruct)" in message
    with pytest.raises(ModelUnavailableError, match="cannot allocate 15 GB"):  # tried again, failing again
        writer.load()
    assert not writer.is_loaded


def test_a_folder_that_is_not_a_chat_model_is_refused(tmp_path):
    from tools.tiny_model import _build_tokenizer

    tokenizer = _build_tokenizer()
    tokenizer.chat_template = None
    writer = LyricsLM(str(tmp_path), loader=lambda *args: LoadedLM(tokenizer, None, "transformers"))
    with pytest.raises(ModelUnavailableError, match=r"no chat template.*Check that the folder holds a chat model"):
        writer.load()


def test_bad_requests_fail_before_the_model_loads():
    def loader(*args):
        raise AssertionError("the model must not load for a bad request")

    writer = LyricsLM(loader=loader)
    with pytest.raises(ValueError, match="brief: describe the song"):
        list(writer.write(LyricsRequest()))
    assert not writer.is_loaded


def test_model_names_and_backends():
    assert resolve_lyrics_model("Qwen2.5-7B-Instruct", "transformers") == "Qwen/Qwen2.5-7B-Instruct"
    assert resolve_lyrics_model("Qwen2.5-3B-Instruct", "mlx") == "mlx-community/Qwen2.5-3B-Instruct-4bit"
    assert resolve_lyrics_model("/models/my-qwen", "mlx") == "/models/my-qwen"
    assert set(LYRICS_MODELS) == set(MLX_LYRICS_MODELS)
    assert LyricsLM(loader=lambda *a: None).backend in {"transformers", "mlx"}
    with pytest.raises(ValueError, match="backend: must be one of auto, transformers, mlx, got 'jax'"):
        LyricsLM(backend="jax")


# ---- the request and the prompt


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"brief": "   "}, "brief: describe the song"),
        ({"brief": "x" * 2_001}, "brief: 2,001 characters is over the 2,000-character limit"),
        ({"language": "klingon"}, "language: 'klingon' is not a language ACE-Step sings"),
        ({"structure": " , ;"}, "structure: list the sections in order"),
        ({"structure": ", ".join(["verse"] * 25)}, "structure: 25 sections is over the limit of 24"),
        ({"structure": "verse, " + "v" * 41}, "structure: a section name is at most 40 characters"),
        ({"lines_per_section": 0}, "lines_per_section: must be between 1 and 16, got 0"),
        ({"lines_per_section": 17}, "lines_per_section: must be between 1 and 16, got 17"),
        ({"rhyme_scheme": "AXBX"}, "rhyme_scheme: one letter A-H per line"),
        ({"rhyme_scheme": "A"}, "rhyme_scheme: one letter A-H per line, 2 to 16 lines (like ABAB), or 'free'; got 'A'"),
        ({"temperature": 2.5}, "temperature: must be between 0 and 2, got 2.5"),
        ({"temperature": "hot"}, "temperature: must be a number, got 'hot'"),
        ({"top_p": 0}, "top_p: must be above 0 and at most 1, got 0"),
        ({"top_p": 1.2}, "top_p: must be above 0 and at most 1, got 1.2"),
        ({"max_new_tokens": 10}, "max_new_tokens: must be between 64 and 2048, got 10"),
        ({"max_new_tokens": 700.5}, "max_new_tokens: must be a whole number, got 700.5"),
        ({"seed": -2}, "seed: must be between 0 and 4,294,967,295 (or -1 for a random seed), got -2"),
        ({"mood": "sad"}, "mood: not a setting of LyricsRequest"),
    ],
)
def test_validation_names_the_field(values, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        request(**values)


def test_defaults_and_seed_resolution():
    req = LyricsRequest(brief="rain").validate()
    assert (req.language, req.lines_per_section, req.temperature, req.top_p, req.max_new_tokens, req.seed) == (
        "en",
        4,
        0.8,
        0.9,
        700,
        -1,
    )
    resolved = req.resolve_seed()
    assert 0 <= resolved.seed <= MAX_SEED and resolved.resolve_seed() == resolved
    assert LyricsRequest.from_values(resolved.to_dict()) == resolved
    assert request(rhyme_scheme="free").validate() and request(rhyme_scheme="abab").validate()
    assert all(request(language=code) for code in VOCAL_LANGUAGES)
    assert all(request(structure=preset) for preset in STRUCTURE_PRESETS.values())


def test_messages_carry_the_request():
    req = request(
        language="es", structure="Intro, verse, coro, verse, chorus, puente, outro", tone="wistful", rhyme_scheme="AABB"
    )
    system, user = build_messages(req)
    assert system == {"role": "system", "content": SYSTEM_PROMPT}
    assert "square brackets" in SYSTEM_PROMPT and "no markdown" in SYSTEM_PROMPT
    text = user["content"]
    assert user["role"] == "user" and BRIEF in text
    assert "Write every lyric line in Spanish" in text
    assert "[Intro], [Verse 1], [Chorus], [Verse 2], [Chorus], [Bridge], [Outro]" in text
    assert "Lines per sung section: 4" in text and "Tone: wistful" in text
    assert "AABB in every section (lines 1 and 2 rhyme; lines 3 and 4 rhyme" in text
    free = build_messages(request(language="unknown", rhyme_scheme="free"))[1]["content"]
    assert "Language" not in free and "Rhyme: free" in free and "Tone" not in free
    assert LyricsRequest(brief="x", structure=DEFAULT_STRUCTURE).sections() == [
        "[Intro]",
        "[Verse 1]",
        "[Chorus]",
        "[Verse 2]",
        "[Chorus]",
        "[Bridge]",
        "[Chorus]",
        "[Outro]",
    ]
    assert request(structure="verse, chorus, guitar solo").sections() == ["[Verse]", "[Chorus]", "[Guitar Solo]"]


# ---- tidying replies into ACE-Step lyrics


@pytest.mark.parametrize(
    ("name", "tag"),
    [
        ("verse", "[Verse]"),
        ("VERSE 2", "[Verse 2]"),
        ("Verse2", "[Verse 2]"),
        ("verse one", "[Verse 1]"),
        ("pre chorus", "[Pre-Chorus]"),
        ("Pre-Chorus", "[Pre-Chorus]"),
        ("PRECHORUS", "[Pre-Chorus]"),
        ("CHORUS", "[Chorus]"),
        ("Chorus - anthemic", "[Chorus - anthemic]"),
        ("Chorus (x2)", "[Chorus]"),
        ("Repeat Chorus", "[Chorus]"),
        ("Final Chorus", "[Chorus]"),
        ("Coro", "[Chorus]"),
        ("Estribillo", "[Chorus]"),
        ("Pre-coro", "[Pre-Chorus]"),
        ("Verso 2", "[Verse 2]"),
        ("Estrofa dos", "[Verse 2]"),
        ("Puente", "[Bridge]"),
        ("Refrain", "[Chorus]"),
        ("Post chorus", "[Post-Chorus]"),
        ("build-up", "[Build-Up]"),
        ("interludio", "[Interlude]"),
        ("Outro:", "[Outro]"),
        ("guitar solo", "[Guitar Solo]"),
        ("FADE OUT", "[Fade Out]"),
    ],
)
def test_section_names_become_ace_step_tags(name, tag):
    assert section_tag(name) == tag


def test_unknown_names_are_tags_only_in_brackets():
    assert section_tag("guitar solo", bracketed=False) is None
    assert section_tag("chorus", bracketed=False) == "[Chorus]"


MESSY = [
    (
        "markdown and chatter around the lyrics",
        "Sure! Here are your lyrics:\n\n**Title: Midnight Rain**\n\n**Verse 1:**\nWalking in the *rain* tonight\n"
        '"I can feel the city lights"\n\n**Chorus**\n- We sing\n- We shine\n\n---\n\n'
        "I hope you enjoy these lyrics! Let me know if you want changes.\nThe chorus repeats the hook.",
        "[Verse 1]\nWalking in the rain tonight\nI can feel the city lights\n\n[Chorus]\nWe sing\nWe shine",
    ),
    (
        "headers, colons, parentheses and shouting tags",
        "# Summer Song\n\n## Intro\n\n## Verse 1\nsun on my face\n\nCHORUS:\nhey hey hey\n\n(Bridge)\n"
        "(ooh, ooh)\nfalling down\n\n[OUTRO]\n",
        "[Intro]\n\n[Verse 1]\nsun on my face\n\n[Chorus]\nhey hey hey\n\n"
        "[Bridge]\n(ooh, ooh)\nfalling down\n\n[Outro]",
    ),
    (
        "Spanish tags, accents and a bare chorus that repeats",
        "¡Claro! Aquí tienes la letra:\n\n[Verso 1]\nCaminando bajo la lluvia\nmi corazón canta\n\n[Coro]\n"
        "«Bailamos hasta el amanecer»\nsin miedo, sin final\n\n[Verso 2]\nLa ciudad duerme\n\n[Estribillo]\n\n"
        "[Puente]\nY si mañana no vuelves\n\n[Pre coro]\nya lo sé\n\nEspero que te guste la canción.",
        "[Verse 1]\nCaminando bajo la lluvia\nmi corazón canta\n\n[Chorus]\nBailamos hasta el amanecer\n"
        "sin miedo, sin final\n\n[Verse 2]\nLa ciudad duerme\n\n[Chorus]\nBailamos hasta el amanecer\n"
        "sin miedo, sin final\n\n[Bridge]\nY si mañana no vuelves\n\n[Pre-Chorus]\nya lo sé",
    ),
    (
        "repeat markers, a tag and a line on one line, blank lines collapsed",
        "[Verse]\nline one\n\n\n\n\nline two\n[Chorus] we go on\nand on\n(x2)\n\n(Repeat Chorus)\n\n[Outro]",
        "[Verse]\nline one\n\nline two\n\n[Chorus]\nwe go on\nand on\n\n[Chorus]\nwe go on\nand on\n\n[Outro]",
    ),
    (
        "a note between the lyrics and more lyrics, code fences, other scripts",
        "```\n[Verse 1]\n夜空に光る星\n\tНочь и звёзды\n\nNote: sing the next part softly\n[Chorus]\n별빛 아래서\n```",
        "[Verse 1]\n夜空に光る星\nНочь и звёзды\n\n[Chorus]\n별빛 아래서",
    ),
    (
        "lyric lines that look like chatter stay when they sit inside a stanza",
        "[Verse 1]\nI hope you find your way back home\nLet me know if you need me\nThis song is all I have\n\n"
        "This song captures the ache of waiting.\nIt uses simple imagery.",
        "[Verse 1]\nI hope you find your way back home\nLet me know if you need me\nThis song is all I have",
    ),
    (
        "no tags at all: lines kept, quotes and bullets and numbering stripped",
        "1. “Rain on the window”\n2. 'Cause I'm dreamin'\n* softly *now*\n> echo",
        "Rain on the window\n'Cause I'm dreamin'\nsoftly now\necho",
    ),
    (
        "control characters and undecodable bytes",
        "[Verse]\nla\x07 la\ufffd\r\nla\x1b la\r\n",
        "[Verse]\nla la\nla la",
    ),
]


@pytest.mark.parametrize(("reply", "expected"), [case[1:] for case in MESSY], ids=[case[0] for case in MESSY])
def test_normalise_lyrics_tidies_real_world_replies(reply, expected):
    assert normalise_lyrics(reply) == expected
    assert normalise_lyrics(expected) == expected  # tidy lyrics stay as they are


@pytest.mark.parametrize(("reply", "expected"), [case[1:] for case in MESSY], ids=[case[0] for case in MESSY])
def test_tidying_line_by_line_only_appends(reply, expected):
    tidier = LyricsTidier()
    shown = ""
    for line in reply.replace("\r\n", "\n").split("\n"):
        grown = shown + tidier.feed(line)
        assert grown.startswith(shown)
        shown = grown
    assert shown + tidier.finish() == expected


def test_normalise_lyrics_edge_cases():
    assert normalise_lyrics("") == ""
    assert normalise_lyrics("\n\n  \n") == ""
    assert normalise_lyrics("Here are the lyrics:\n\nI hope you like the song!") == ""
    assert normalise_lyrics("[Instrumental]") == "[Instrumental]"
    # ACE-Step's own conventions inside lines survive: UPPERCASE emphasis, (backing vocals).
    assert normalise_lyrics("[Chorus]\nWE ARE ALIVE (alive)") == "[Chorus]\nWE ARE ALIVE (alive)"
    # Openers are dropped only when they read as chatter, not when a lyric starts the same way.
    assert normalise_lyrics("Great balls of fire\nOkay, I see") == "Great balls of fire\nOkay, I see"
    assert normalise_lyrics("Okay! Here's a song.\nSure thing, here it is:\n[Verse]\nla") == "[Verse]\nla"


def test_importing_the_module_loads_no_model_library():
    code = "import sys, lyrics_lm; print(sorted({'torch', 'transformers', 'mlx', 'mlx_lm'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"
