"""A tiny random-weight stand-in for the ACE-Step 5 Hz LM, saved with ``save_pretrained``.

A Qwen3 causal LM (hidden 32, 2 layers) and a byte-level BPE tokenizer trained in-process,
with the real model's special tokens, a ChatML chat template, and all 64,000
``<|audio_code_N|>`` tokens (about a second to add; the code vocabulary is read from the
tokenizer, so a smaller one would work too). It writes gibberish: only the planner's
constraints make its plans valid.
"""

from __future__ import annotations

from pathlib import Path

NUM_CODES = 64_000
SEED = 0
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
_CORPUS = (
    "# Instruction\nGenerate audio semantic tokens based on the given conditions:\n\n"
    "# Caption\nupbeat pop song with bright synths and female vocals\n\n# Lyric\n[verse]\n"
    "walking down the morning street\n[chorus]\nwe sing together all night long\n"
    "bpm: 120\ncaption: calm piano ballad\nduration: 30\nkeyscale: C# minor\nlanguage: en\n"
    "timesignature: 4\n0123456789 A B C D E F G major minor en zh ja ko es fr de\n"
)


def build_tiny_planner_lm(target: Path) -> Path:
    """Build, seed and save the tiny LM and its tokenizer into ``target``; return it."""
    import torch
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator([_CORPUS] * 4, trainer)
    # As in Qwen3: <think> and the audio codes are added tokens but not "special" ones,
    # so decoding keeps them.
    extra = ["<think>", "</think>"] + [f"<|audio_code_{n}|>" for n in range(NUM_CODES)]
    bpe.add_tokens([AddedToken(text, special=False, normalized=False) for text in extra])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=SPECIAL_TOKENS[1:],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(SEED)
    config = Qwen3Config(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        vocab_size=len(tokenizer),
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    Qwen3ForCausalLM(config).save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target
