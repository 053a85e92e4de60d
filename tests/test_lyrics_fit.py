from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from lm.lyrics_fit import count_syllables, fit_line, measure

VERSE = (
    "[verse]\nWalking down the morning street\nCounting every heartbeat\n[chorus]\nWe sing together all night long\n"
)


def test_syllables_by_vowel_groups_and_by_character():
    assert [count_syllables(w) for w in ("time", "together", "little", "sky", "a")] == [1, 3, 2, 1, 1]
    assert count_syllables("東京") == 2 and count_syllables("ありがとう") == 5 and count_syllables("사랑해") == 3


def test_section_tags_are_not_sung():
    assert measure("[verse]\n[chorus]\n", 30).verdict == "empty"
    fit = measure(VERSE, 60)
    assert fit.sections == 2
    assert fit.syllables == sum(
        count_syllables(w) for w in VERSE.replace("[verse]", "").replace("[chorus]", "").split()
    )


def test_short_songs_with_many_words_are_flagged_with_a_duration_that_fits():
    long_lyrics = "[verse]\n" + "\n".join(["every little word we sing tonight"] * 40)
    fit = measure(long_lyrics, 30)
    assert fit.verdict == "too dense"
    assert fit.suggested_s > 30 and fit.suggested_s % 10 == 0
    assert measure(long_lyrics, fit.suggested_s).verdict == "fits"
    assert "Try" in fit.message(30)


def test_a_slow_tempo_carries_fewer_words():
    lyrics = "[verse]\n" + "\n".join(["every little word we sing tonight"] * 12)
    assert measure(lyrics, 60).verdict == "fits"
    assert measure(lyrics, 60, bpm=60).verdict != "fits"


def test_each_tab_measures_against_the_length_its_lyrics_get(tmp_path):
    dense = "[verse]\n" + "\n".join(["every little word we sing tonight"] * 30)
    assert "too dense" in fit_line("generate", {"lyrics": dense, "audio_duration": 20})
    assert fit_line("generate", {"lyrics": dense, "audio_duration": 20, "instrumental": True}) == ""
    assert "in 15 s" in fit_line("extend", {"lyrics": dense, "extend_seconds": 15})
    song = tmp_path / "song.wav"
    sf.write(song, np.zeros((44_100 * 90, 2)), 44_100)
    assert "in 90 s" in fit_line("cover", {"lyrics": dense, "src_audio": str(song), "audio_duration": 0})
    assert "in 40 s" in fit_line("cover", {"lyrics": dense, "src_audio": str(song), "audio_duration": 40})
    assert fit_line("edit", {"lyrics": dense, "src_audio": None}) == ""
    assert fit_line("generate", {"lyrics": dense, "audio_duration": 20, "bpm": "fast"}) == ""


@pytest.mark.parametrize(
    ("line", "language", "syllables"),
    [
        ("walking down the morning street", "en", 7),  # walk-ing down the morn-ing street
        ("we sing together all night long", "en", 8),  # we sing to-geth-er all night long
        ("I love the time we make", "en", 6),  # silent final e: love, time, make
        ("Te fuiste un martes", "es", 6),  # te fuis-te un mar-tes (the final e is sung)
        ("Corazón, canción, mañana", "es", 8),  # co-ra-zón can-ción ma-ña-na (ñ is no vowel)
        ("bailando bajo la luna", "es", 8),  # bai-lan-do ba-jo la lu-na
    ],
)
def test_known_english_and_spanish_lines(line, language, syllables):
    assert measure(line, 60, language=language).syllables == syllables
