"""``python -m training``: check, prepare and train from a folder of songs, headless.

    python -m training check  SONGS
    python -m training train  SONGS --out my-style [--adapter lora|lokr] [--steps N] [--store] ...

``train`` prepares what is not cached yet, then trains; Ctrl-C stops at the end of the current
step and keeps a checkpoint, and the same command run again resumes from it. ``--store`` keeps the
finished adapter in the studio's LoRA store, where the studio's LoRA panel lists it.
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
from pathlib import Path

from backend import RunControl
from training.dataset import DatasetError, check_dataset, read_dataset
from training.trainer import StepReport, TrainSettings

DEFAULTS = TrainSettings()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training", description="Train a LoRA or LoKr from your songs.")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="check every song of a dataset folder (no model needed)")
    check.add_argument("dataset", type=Path)
    run = commands.add_parser("train", help="prepare (once) and train; run again to resume")
    run.add_argument("dataset", type=Path, help="a folder: v1's name.mp3 + name_prompt.txt (+ name_lyrics.txt), "
                     "or songs with a dataset.json / dataset.csv")  # fmt: skip
    run.add_argument("--out", type=Path, required=True, help="the run's folder (checkpoint, then adapter/)")
    run.add_argument("--model", default=None, help="the DiT to train on (registry name or folder; as the studio's)")
    run.add_argument("--device", choices=("cuda", "mps", "cpu"), default=None)
    run.add_argument("--trigger", default="", help="a word put before every caption, to call the style up later")
    run.add_argument("--adapter", choices=("lora", "lokr"), default=DEFAULTS.adapter)
    run.add_argument("--rank", type=int, default=DEFAULTS.rank)
    run.add_argument("--alpha", type=int, default=DEFAULTS.alpha)
    run.add_argument("--dropout", type=float, default=DEFAULTS.dropout)
    run.add_argument("--lr", type=float, default=DEFAULTS.learning_rate, dest="learning_rate")
    run.add_argument("--epochs", type=int, default=DEFAULTS.epochs)
    run.add_argument("--steps", type=int, default=None, help="optimiser steps (default: the epochs' worth)")
    run.add_argument("--accumulation", type=int, default=DEFAULTS.gradient_accumulation, dest="gradient_accumulation")
    run.add_argument("--warmup", type=int, default=DEFAULTS.warmup_steps, dest="warmup_steps")
    run.add_argument("--save-every", type=int, default=DEFAULTS.save_every, dest="save_every")
    run.add_argument("--seed", type=int, default=DEFAULTS.seed)
    run.add_argument("--fresh", action="store_true", help="ignore a checkpoint in --out and start again")
    run.add_argument("--store", action="store_true", help="keep the adapter in the studio's LoRA store when done")
    run.add_argument(
        "--name", default=None, help="its name in the LoRA store (default: the trigger word, or --out's name)"
    )
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace) -> TrainSettings:
    names = {f.name for f in dataclasses.fields(TrainSettings)}
    return TrainSettings(**{name: value for name, value in vars(args).items() if name in names})


def _eta(seconds: float) -> str:
    whole = int(seconds + 0.5)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def print_step(report: StepReport) -> None:
    print(
        f"step {report.step}/{report.total}  loss {report.loss:.4f}  lr {report.learning_rate:.2e}  "
        f"{report.steps_per_s:.2f} steps/s  ETA {_eta(report.eta_s)}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        clips = read_dataset(args.dataset)
        if args.command == "check":
            lengths = check_dataset(clips)
            print(f"{len(clips)} songs, {sum(lengths) / 60:.1f} minutes: ready to train")
            return 0
        settings = settings_from(args)
        settings.validate()
    except (DatasetError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return _train(args, clips, settings)


def _train(args: argparse.Namespace, clips, settings: TrainSettings) -> int:
    import backend as backend_module
    from checkpoints import resolve_model
    from training.prepare import prepare
    from training.trainer import train

    device = backend_module.pick_device(args.device) if args.device else None
    model = backend_module.Backend(resolve_model(args.model), device=device)
    control = RunControl(lambda fraction, message: None)
    previous = signal.signal(signal.SIGINT, lambda *_: control.cancel())
    try:
        pipe = model.load()
        report = prepare(pipe, clips, control, trigger_word=args.trigger)
        print(f"prepared {len(clips)} songs ({report.encoded} encoded now, cache {report.cache_dir})", flush=True)
        extra = {"dataset": str(args.dataset.resolve()), "trigger_word": args.trigger, "model": args.model}
        result = train(pipe.transformer, report.clips, settings, args.out, control, print_step, not args.fresh, extra)
    except (DatasetError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except backend_module.Cancelled:
        print("stopped before training began", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, previous)
    if result.stopped:
        print(f"stopped at step {result.step}/{result.total}; checkpoint {result.checkpoint}; run again to resume")
        return 130
    print(f"adapter saved: {result.adapter_dir} (add its two files in the LoRA panel, or Studio.add_lora)")
    if args.store and result.adapter_dir is not None:
        from training.run import store_adapter

        name = args.name or args.trigger or args.out.resolve().name
        try:
            checked, stored, _ = store_adapter(pipe.transformer, result.adapter_dir, name, args.trigger)
        except ValueError as error:
            print(f"error: the adapter is saved, but not in the LoRA store: {error}", file=sys.stderr)
            return 2
        print(f"in the LoRA store as {name!r} ({checked.info.sha256[:16]}, {stored.parent}): "
              "the studio lists it under LoRA → Show my LoRAs")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
