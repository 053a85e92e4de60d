"""Training speed: optimiser steps per second of ``training.trainer.train`` on the DiT.

    python -m tools.bench_train                       # the tiny model (a smoke run)
    python -m tools.bench_train --full-size --steps 3 # the published 2B architecture, random weights

The clips are random tensors of a 10 s song's shapes (preparation is timed by its own cache, once),
so the figure is the DiT's forward and backward with the adapter, the optimiser and the bookkeeping.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
from pathlib import Path


def random_clips(transformer, seconds: float, count: int = 2, text_tokens: int = 128):
    import torch

    from training.prepare import PreparedClip

    frames = int(seconds * 25)  # 25 latent frames per second
    acoustic = transformer.config.audio_acoustic_hidden_dim
    hidden = transformer.config.encoder_hidden_size or transformer.config.hidden_size
    generator = torch.Generator().manual_seed(0)
    clips = []
    for index in range(count):
        tensors = {
            "target_latents": torch.randn(frames, acoustic, generator=generator),
            "encoder_hidden_states": torch.randn(text_tokens, hidden, generator=generator),
            "context_latents": torch.randn(frames, 2 * acoustic, generator=generator),
        }
        clips.append(PreparedClip(f"random{index}", f"{index:064x}", tensors))
    return clips


def main(argv: list[str] | None = None) -> None:
    import torch

    from training.trainer import TrainSettings, train

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full-size", action="store_true")
    parser.add_argument("--steps", type=int, default=5, help="timed steps (one more runs first, untimed)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--adapter", choices=("lora", "lokr"), default="lora")
    args = parser.parse_args(argv)
    if args.full_size:
        from diffusers.models.transformers.ace_step_transformer import AceStepTransformer1DModel

        torch.manual_seed(0)
        transformer = AceStepTransformer1DModel(is_turbo=True)  # the published DiT's shape (tools/full_size.py)
    else:
        from tools.tiny_model import build_tiny_pipeline

        transformer = copy.deepcopy(build_tiny_pipeline().transformer)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    transformer.to(device)
    clips = random_clips(transformer, args.seconds)
    rates = []
    settings = TrainSettings(adapter=args.adapter, steps=args.steps + 1, gradient_accumulation=1, save_every=10**6)
    with tempfile.TemporaryDirectory() as out:
        train(transformer, clips, settings, Path(out), on_step=lambda r: rates.append((r.step, r.steps_per_s)))
    # steps_per_s counts from the run's start: take the rate over the timed steps only.
    (first_step, first_rate), (last_step, last_rate) = rates[0], rates[-1]
    seconds = last_step / last_rate - first_step / first_rate
    print(
        f"{'full-size' if args.full_size else 'tiny'} DiT, {args.adapter}, {args.seconds:g} s clip, {device}, "
        f"{torch.get_num_threads()} threads: {args.steps / seconds:.3f} steps/s ({seconds / args.steps:.2f} s/step)"
    )


if __name__ == "__main__":
    main()
