"""Curated starting points for the Generate tab: a style prompt, lyrics, language, length.

The lyrics are written for the studio (no borrowed songs). Section tags are the ones
ACE-Step's own examples use; each song is long enough for its words (the fit meter
agrees), and the bpm sits in the prompt where it helps the style.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Example:
    name: str
    prompt: str
    lyrics: str
    vocal_language: str
    audio_duration: float
    instrumental: bool = False


EXAMPLES: tuple[Example, ...] = (
    Example(
        "Reggaeton",
        "reggaeton, dembow rhythm, 95 bpm, deep 808 bass, male vocals, catchy hook, club",
        "[verse]\nLa noche empieza cuando tú llegas\nLas luces bajan y el bajo nos pega\n"
        "Tu sombra baila pegada a la mía\nY no me importa si ya es otro día\n\n"
        "[chorus]\nDale, dale, que la calle es nuestra\nDale, dale, hasta que amanezca\n"
        "Dale, dale, que la calle es nuestra\nDale, dale, hasta que amanezca",
        "es",
        75,
    ),
    Example(
        "Salsa",
        "salsa dura, piano montuno, brass section, congas and timbales, 180 bpm, male lead with coro",
        "[verse]\nEn el barrio suena la campana\nY la gente sale a la ventana\n"
        "El trombón contesta desde la esquina\nY la luna baja por la colina\n\n"
        "[chorus]\nSabor, sabor, que nadie se quede sentado\nSabor, sabor, el barrio entero ha bailado",
        "es",
        80,
    ),
    Example(
        "Bachata",
        "bachata, requinto guitar arpeggios, bongo and güira, romantic, 128 bpm, tender male vocals",
        "[verse]\nTe fuiste un martes sin decir adiós\nY en la guitarra se quedó tu voz\n"
        "Cada cuerda llora lo que no te dije\nY cada noche el corazón elige\n\n"
        "[chorus]\nVuelve, que la luna pregunta por ti\nVuelve, que el silencio no sabe vivir",
        "es",
        80,
    ),
    Example(
        "Flamenco",
        "flamenco, nylon guitar rasgueado, palmas, cajón, passionate female cante, Phrygian mode",
        "[verse]\nPor la calle de la pena\nva mi sombra sin sus pies\n"
        "y en la reja de la luna\nse me enreda tu querer\n\n"
        "[chorus]\nAy, que me duele la copla\nay, que me quema el cantar",
        "es",
        70,
    ),
    Example(
        "Tango",
        "tango, bandoneón, violin, double bass, dramatic piano, 2/4, melancholic male baritone",
        "[verse]\nBuenos Aires de madrugada\ncon el humo de otro café\n"
        "tu recuerdo en la escalera\nno me deja de volver\n\n"
        "[chorus]\nY el bandoneón me dice\nque la vida es un compás\n"
        "que se pierde en una esquina\ny no vuelve nunca más",
        "es",
        80,
    ),
    Example(
        "Cumbia",
        "cumbia, accordion, güiro, guacharaca, walking bass, 95 bpm, festive, mixed vocals",
        "[verse]\nBaja el río con la luna llena\nY la orilla se llenó de arena\n"
        "Suena el acordeón en la ribera\nY la noche baila a su manera\n\n"
        "[chorus]\nCumbia, cumbia, que mueve la cintura\nCumbia, cumbia, hasta la llanura",
        "es",
        70,
    ),
    Example(
        "Synth-pop",
        "dreamy synth-pop, analog pads, gated drums, 110 bpm, airy female vocals",
        "[verse]\nNeon rivers in the rain\nEvery window says your name\n"
        "Headlights paint the empty street\nI can feel the city's heartbeat\n\n"
        "[chorus]\nHold on, hold on to the afterglow\nHold on, we've got nowhere else to go",
        "en",
        70,
    ),
    Example(
        "Lo-fi (instrumental)",
        "lo-fi hip hop, dusty vinyl crackle, mellow Rhodes chords, boom bap drums, 80 bpm, rainy night",
        "",
        "en",
        60,
        instrumental=True,
    ),
)

EXAMPLE_FIELDS = ("prompt", "lyrics", "vocal_language", "audio_duration", "instrumental")


def example_rows() -> list[list]:
    """Rows for ``gr.Examples`` in ``EXAMPLE_FIELDS`` order."""
    return [[getattr(example, name) for name in EXAMPLE_FIELDS] for example in EXAMPLES]
