"""The ``tiny`` model: a random-weight ACE-Step pipeline built from the real component classes.

It exists so that the studio runs offline for a newcomer and so that tests walk the
same ``save_pretrained`` / ``from_pretrained`` path as real checkpoints. It outputs
noise. The build is seeded, so every machine builds the same weights.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from audio_io import SAMPLE_RATE  # the real model's rate

CACHE_ENV_VAR = "ACE_STUDIO_CACHE"
TINY_FORMAT_VERSION = 1  # bump when the build below changes, so old caches are rebuilt
TINY_SEED = 0
ACOUSTIC_DIM = 8  # latent channels; the real model has 64
HIDDEN = 32
DOWNSAMPLING_RATIOS = [2, 4, 4, 6, 10]  # multiply to 1920: 25 latent frames per second
SILENCE_FRAMES = 15_000  # the condition encoder's silence_latent length (600 s at 25 Hz)
MARKER_FILE = "tiny_model.txt"

# Text the byte-level BPE tokenizer is trained on: the pipeline's own prompt scaffolding
# plus a little song text, so prompts tokenize into a realistic number of tokens.
_TOKENIZER_CORPUS = (
    "# Instruction\nFill the audio semantic mask based on the given conditions:\n\n"
    "# Caption\nupbeat pop song with bright synths and female vocals\n\n"
    "# Metas\n- bpm: 120\n- timesignature: 4\n- keyscale: C major\n- duration: 60 seconds\n"
    "# Languages\nen\n\n# Lyric\n[verse]\nwalking down the morning street\n"
    "[chorus]\nwe sing together all night long\n[bridge]\n[Instrumental]\n"
)
_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def default_cache_dir() -> Path:
    override = os.environ.get(CACHE_ENV_VAR)
    if override:
        return Path(override).expanduser()
    return Path.home() / ".cache" / "ace-music-studio"


def tiny_model_dir(cache_dir: Path | None = None, turbo: bool = True) -> Path:
    name = "tiny" if turbo else "tiny-base"
    return (cache_dir or default_cache_dir()) / f"{name}-v{TINY_FORMAT_VERSION}"


def _build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator([_TOKENIZER_CORPUS] * 4, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=_SPECIAL_TOKENS[1:],
    )


def build_tiny_pipeline(turbo: bool = True):
    """Build the tiny pipeline in memory (about a second on two CPU cores).

    ``turbo=False`` builds the base-variant stand-in: the same weights without the
    turbo flag, so guidance runs and the base-only tasks are offered.
    """
    import torch
    from diffusers import AceStepPipeline, FlowMatchEulerDiscreteScheduler
    from diffusers.models.transformers.ace_step_transformer import AceStepTransformer1DModel
    from diffusers.pipelines.ace_step.modeling_ace_step import AceStepConditionEncoder
    from transformers import Qwen3Config, Qwen3Model

    attention = dict(num_attention_heads=4, num_key_value_heads=2, head_dim=8, sliding_window=16)
    tokenizer = _build_tokenizer()
    torch.manual_seed(TINY_SEED)
    transformer = AceStepTransformer1DModel(
        hidden_size=HIDDEN,
        intermediate_size=2 * HIDDEN,
        num_hidden_layers=2,
        # The DiT sees noisy latents, source latents and the chunk mask side by side.
        in_channels=3 * ACOUSTIC_DIM,
        audio_acoustic_hidden_dim=ACOUSTIC_DIM,
        patch_size=2,
        rope_theta=10_000.0,
        is_turbo=turbo,
        **attention,
    )
    text_encoder = Qwen3Model(
        Qwen3Config(
            hidden_size=HIDDEN,
            intermediate_size=2 * HIDDEN,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=8,
            vocab_size=len(tokenizer),
            max_position_embeddings=4096,
        )
    )
    condition_encoder = AceStepConditionEncoder(
        hidden_size=HIDDEN,
        intermediate_size=2 * HIDDEN,
        text_hidden_dim=HIDDEN,
        timbre_hidden_dim=ACOUSTIC_DIM,
        num_lyric_encoder_hidden_layers=2,
        num_timbre_encoder_hidden_layers=2,
        rope_theta=10_000.0,
        **attention,
    )
    vae = _tiny_vae()
    audio_tokenizer, audio_token_detokenizer = _tiny_codec(attention)
    # Sample silence through the VAE, as the real checkpoints do: literal zeros are
    # out of distribution for the timbre encoder.
    with torch.no_grad():
        silence = vae.encode(torch.zeros(1, 2, SAMPLE_RATE)).latent_dist.mode().transpose(1, 2)
        repeats = -(-SILENCE_FRAMES // silence.shape[1])
        condition_encoder.silence_latent.copy_(silence.repeat(1, repeats, 1)[:, :SILENCE_FRAMES])
    return AceStepPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
        condition_encoder=condition_encoder,
        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1, shift=1.0),
        audio_tokenizer=audio_tokenizer,
        audio_token_detokenizer=audio_token_detokenizer,
    )


def _tiny_vae():
    from diffusers import AutoencoderOobleck

    return AutoencoderOobleck(
        # The encoder emits mean and scale, so its width is twice the latent size.
        encoder_hidden_size=2 * ACOUSTIC_DIM,
        downsampling_ratios=DOWNSAMPLING_RATIOS,
        channel_multiples=[1, 1, 1, 1, 1],
        decoder_channels=8,
        decoder_input_channels=ACOUSTIC_DIM,
        audio_channels=2,
        sampling_rate=SAMPLE_RATE,
    )


def _tiny_codec(attention: dict[str, Any]) -> tuple[Any, Any]:
    """The audio tokenizer (25 Hz latents to 5 Hz codes) and its detokenizer."""
    from diffusers.pipelines.ace_step.modeling_ace_step import AceStepAudioTokenDetokenizer, AceStepAudioTokenizer

    codec = dict(
        hidden_size=HIDDEN,
        intermediate_size=2 * HIDDEN,
        audio_acoustic_hidden_dim=ACOUSTIC_DIM,
        pool_window_size=5,
        num_attention_pooler_hidden_layers=1,
        **attention,
    )
    return AceStepAudioTokenizer(fsq_dim=HIDDEN, **codec), AceStepAudioTokenDetokenizer(**codec)


def ensure_tiny_model(cache_dir: Path | None = None, turbo: bool = True) -> Path:
    """Build and save the tiny model once; return its directory."""
    return _build_once(
        tiny_model_dir(cache_dir, turbo), lambda staging: build_tiny_pipeline(turbo).save_pretrained(staging)
    )


def tiny_planner_dir(cache_dir: Path | None = None) -> Path:
    return (cache_dir or default_cache_dir()) / f"tiny-planner-v{TINY_FORMAT_VERSION}"


def ensure_tiny_planner(cache_dir: Path | None = None) -> Path:
    """Build and save the tiny planner LM once; return its directory."""
    return _build_once(tiny_planner_dir(cache_dir), build_tiny_planner_lm)


def tiny_lyrics_dir(cache_dir: Path | None = None) -> Path:
    return (cache_dir or default_cache_dir()) / f"tiny-lyrics-v{TINY_FORMAT_VERSION}"


def ensure_tiny_lyrics_lm(cache_dir: Path | None = None) -> Path:
    """Build and save the tiny lyrics LM once; return its directory."""
    return _build_once(tiny_lyrics_dir(cache_dir), build_tiny_lyrics_lm)


def _build_once(target: Path, build: Callable[[Path], object]) -> Path:
    """Run ``build(folder)`` once for ``target``.

    The folder is written beside its final place and renamed into it, so a crash
    mid-build never leaves a half-saved model that later loads fail on.
    """
    if (target / MARKER_FILE).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tiny-build-", dir=target.parent))
    try:
        build(staging)
        (staging / MARKER_FILE).write_text(
            "ACE Music Studio test model: random weights, outputs noise.\n",
            encoding="utf-8",
        )
        try:
            staging.rename(target)
        except OSError:
            # Another process finished first; its copy is identical (seeded build).
            if not (target / MARKER_FILE).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


# ---- the tiny planner: a stand-in for the ACE-Step 5 Hz LM

NUM_CODES = 64_000  # the real audio tokenizer's codebook; the code vocabulary is read from the tokenizer
_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
_PLANNER_CORPUS = (
    "# Instruction\nGenerate audio semantic tokens based on the given conditions:\n\n"
    "# Caption\nupbeat pop song with bright synths and female vocals\n\n# Lyric\n[verse]\n"
    "walking down the morning street\n[chorus]\nwe sing together all night long\n"
    "bpm: 120\ncaption: calm piano ballad\nduration: 30\nkeyscale: C# minor\nlanguage: en\n"
    "timesignature: 4\n0123456789 A B C D E F G major minor en zh ja ko es fr de\n"
)


def _chat_tokenizer(corpus: str, vocab_size: int, added: list[str] | tuple[str, ...] = ()):
    """A byte-level BPE trained on ``corpus`` with ChatML's special tokens and template, as the
    tiny planner and lyrics writer use; ``added`` become added (not special) tokens."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator([corpus] * 4, trainer)
    if added:
        bpe.add_tokens([AddedToken(text, special=False, normalized=False) for text in added])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=_SPECIAL_TOKENS[1:],
    )
    tokenizer.chat_template = _CHAT_TEMPLATE
    return tokenizer


def _tiny_lm_config(config_class: Any, tokenizer: Any, **shape: Any) -> Any:
    """The tiny LMs' common config (hidden 32, 2 layers, tied embeddings unless ``shape`` says otherwise)."""
    values = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, tie_word_embeddings=True)
    return config_class(
        **{**values, **shape},
        vocab_size=len(tokenizer),
        max_position_embeddings=4096,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def build_tiny_planner_lm(target: Path) -> Path:
    """Build, seed and save the tiny LM and its tokenizer into ``target``; return it."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    # As in Qwen3: <think> and the audio codes are added tokens but not "special" ones,
    # so decoding keeps them.
    extra = ["<think>", "</think>"] + [f"<|audio_code_{n}|>" for n in range(NUM_CODES)]
    tokenizer = _chat_tokenizer(_PLANNER_CORPUS, vocab_size=400, added=extra)
    torch.manual_seed(TINY_SEED)
    config = _tiny_lm_config(Qwen3Config, tokenizer, num_attention_heads=2, num_key_value_heads=1, head_dim=16)
    Qwen3ForCausalLM(config).save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


# ---- the tiny lyrics writer: a random-weight Qwen2 chat model, the lyrics writer's test LM
#
# A Qwen2 causal LM (hidden 32, 2 layers, 4 heads, 2 KV heads) and a byte-level BPE tokenizer
# trained in-process, with Qwen's special tokens and a ChatML chat template. The weights are
# random with one tilt: every position carries a constant direction that the untied output
# layer reads as a fixed token preference, so the end-of-turn tokens are rare (runs reach
# ``max_new_tokens``, which keeps them the same length) and newlines common (text streams line
# by line). Sampling still picks the tokens, so the text depends on the seed.

_LYRICS_CORPUS = (
    "[Intro]\n\n[Verse 1]\nwalking down the morning street\nthe city hums beneath my feet\n\n"
    "[Pre-Chorus]\nand I can feel it rising\n\n[Chorus]\nwe sing together all night long\n"
    "[Bridge]\nif tomorrow never comes\n[Outro]\n"
    "[Estribillo]\ncantamos juntos bajo la luna\ncorazón, canción, mañana\n"
    "Write song lyrics in English about rain. Rhyme scheme ABAB, four lines per section.\n"
)
_CONSTANT_DIM = 0  # the hidden dimension that carries the constant direction
_CONSTANT = 8.0
_SPREAD = 0.5  # the other tokens' logits: random, near 0
_NEWLINE_LOGIT = 5.0  # with ~300 tokens near logit 0, about one token in eight is a newline
_END_LOGIT = -8.0
_WORD_BONUS = 2.0


def build_tiny_lyrics_lm(target: Path) -> Path:
    """Build, seed and save the tiny chat LM and its tokenizer into ``target``; return it."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer = _chat_tokenizer(_LYRICS_CORPUS, vocab_size=320)
    torch.manual_seed(TINY_SEED)
    config = _tiny_lm_config(
        Qwen2Config, tokenizer, num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False
    )
    model = Qwen2ForCausalLM(config)
    with torch.no_grad():
        model.model.embed_tokens.weight[:, _CONSTANT_DIM] = _CONSTANT
        # The final RMSNorm scales the constant direction to sqrt(hidden_size).
        scale = config.hidden_size**-0.5
        preference = model.lm_head.weight[:, _CONSTANT_DIM]
        preference.normal_(0.0, _SPREAD * scale)
        preference[tokenizer.convert_tokens_to_ids("Ċ")] = _NEWLINE_LOGIT * scale  # "Ċ": byte-level "\n"
        for token in _SPECIAL_TOKENS:
            preference[tokenizer.convert_tokens_to_ids(token)] = _END_LOGIT * scale
        # Tokens that spell letters come first, so the gibberish reads like words, not raw bytes.
        for i in range(len(tokenizer)):
            if tokenizer.decode([i]).strip().isalpha():
                preference[i] += _WORD_BONUS * scale
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target
