"""The tiny random-weight Whisper: the lyrics check's test speech model, built offline like the
other ``tiny`` models (tools/tiny_model.py) and loaded back through ``from_pretrained``.

A WhisperConfig of hidden 32 with one encoder and one decoder layer, a byte-level BPE trained
here on a little song text plus Whisper's special and timestamp tokens, and a generation config
with the fields transformers' word timestamps read (alignment heads, the task tokens). Its
words are gibberish: it proves the path runs end to end, not that anything is heard right.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from tools.tiny_model import TINY_SEED, _build_once, default_cache_dir

TINY_WHISPER_VERSION = 1
_CORPUS = (
    "walking down the morning street the city hums beneath my feet we sing together all night long "
    "and I can feel the summer rain oh yeah la la la hey\n"
)
_SPECIALS = [
    "<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|translate|>", "<|transcribe|>",
    "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>",
]  # fmt: skip
_TIMESTAMPS = [f"<|{i * 0.02:.2f}|>" for i in range(1501)]  # 0.00 to 30.00 s, as Whisper's vocabulary


def tiny_whisper_dir(cache_dir: Path | None = None) -> Path:
    return (cache_dir or default_cache_dir()) / f"tiny-whisper-v{TINY_WHISPER_VERSION}"


def ensure_tiny_whisper(cache_dir: Path | None = None) -> Path:
    return _build_once(tiny_whisper_dir(cache_dir), build_tiny_whisper)


def _tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import WhisperTokenizer

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    bpe.train_from_iterator([_CORPUS] * 4, trainer)
    with tempfile.TemporaryDirectory() as folder:
        vocab, merges = bpe.model.save(folder)
        tokenizer = WhisperTokenizer(vocab, merges, unk_token="<|endoftext|>", bos_token="<|endoftext|>",
                                     eos_token="<|endoftext|>", pad_token="<|endoftext|>")  # fmt: skip
    tokenizer.add_special_tokens({"additional_special_tokens": _SPECIALS[1:]})
    tokenizer.add_tokens(_TIMESTAMPS)
    return tokenizer


def build_tiny_whisper(target: Path) -> Path:
    """Build, seed and save the tiny Whisper, its tokenizer and feature extractor into ``target``."""
    import torch
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    tokenizer = _tokenizer()
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in _SPECIALS}
    torch.manual_seed(TINY_SEED)
    config = WhisperConfig(
        vocab_size=len(tokenizer), num_mel_bins=80, d_model=32, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
        max_source_positions=1500, max_target_positions=64,
        pad_token_id=ids["<|endoftext|>"], bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|endoftext|>"],
        decoder_start_token_id=ids["<|startoftranscript|>"],
    )  # fmt: skip
    model = WhisperForConditionalGeneration(config)
    generation = model.generation_config
    generation.decoder_start_token_id = ids["<|startoftranscript|>"]
    generation.no_timestamps_token_id = ids["<|notimestamps|>"]
    generation.is_multilingual = False  # English only, as the ".en" models: no language or task token
    generation.alignment_heads = [[0, 0], [0, 1]]  # cross-attention heads read for word times
    generation.max_length = 64
    generation.forced_decoder_ids = None
    generation.begin_suppress_tokens = [ids["<|endoftext|>"]]
    generation._from_model_config = False  # else loading rebuilds it from the model config, timestamps lost
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(target)
    (target / "tiny_whisper.json").write_text(json.dumps({"seed": TINY_SEED}), encoding="utf-8")
    return target
