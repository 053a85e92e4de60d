"""Where the studio runs: the command line, the network guard, and Hugging Face Spaces.

Kept apart from the page (``app.py``) so that scripts (``batch.py``) and tests can build
the same ``Studio`` the page uses without importing Gradio's layout.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import backend as backend_module
from backend import Backend
from checkpoints import PLANNER_ENV_VAR, REGISTRY, TINY_MODELS, choose_planner, default_model_name, resolve_model
from lm.planner import DEFAULT_LM, LM_MODELS, Planner
from lm.session import BACKENDS, load_lm
from lyrics_check.recognise import SPEECH_ENV_VAR, make_recogniser
from lyrics_lm import DEFAULT_LYRICS_MODEL, LYRICS_MODELS, SMALL_LYRICS_MODEL, LyricsLM
from outputs import OutputStore, default_outputs_dir
from serving.env import DEFAULT_HOST, DEFAULT_PORT, on_space
from studio import STUDIO_NAME, Studio
from tools.tiny_model import ensure_tiny_lyrics_lm, ensure_tiny_planner, tiny_lyrics_dir, tiny_planner_dir


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    names = ", ".join([*REGISTRY, *TINY_MODELS])
    parser = argparse.ArgumentParser(description=f"{STUDIO_NAME}: a web studio for ACE-Step 1.5.")
    parser.add_argument(
        "--model",
        default=None,
        help=f"registry name ({names}), Hub repo id or local folder; default: $ACE_STUDIO_MODEL, "
        f"else {default_model_name()} (see README)",
    )
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help="address to listen on (default 127.0.0.1, this computer only; 0.0.0.0 opens it to the network "
        "and then needs --auth or --no-auth)",
    )
    parser.add_argument("--auth", default=None, metavar="USER:PASSWORD", help="require this login on the page")
    parser.add_argument(
        "--no-auth", action="store_true", help="open to the network without a login (anyone there can use it)"
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--outputs", type=Path, default=None, help="folder for runs (default ./outputs)")
    parser.add_argument(
        "--device",
        choices=("cuda", "mps", "cpu"),
        default=None,
        help="override device choice",
    )
    parser.add_argument("--offload", action="store_true", help="CPU offload: less GPU memory, slower")
    parser.add_argument(
        "--low-vram",
        action="store_true",
        help="the small-GPU profile: CPU offload, and the planner and lyrics models on the CPU (see README)",
    )
    parser.add_argument(
        "--planner",
        default=None,
        help=f"the 5 Hz LM for Think: {', '.join(LM_MODELS)}, a Hub repo id or a local folder, or 'none' "
        f"(default ${PLANNER_ENV_VAR}, else by GPU memory: over 6 GB 0.6B, over 12 GB 1.7B, from 16 GB 4B; "
        "0.6B on the CPU; with a tiny model, the tiny test planner)",
    )
    parser.add_argument(
        "--lyrics-model",
        default=None,
        help=f"the lyrics writer: {', '.join(LYRICS_MODELS)}, a Hub repo id or a local folder, or 'none' "
        f"(default {DEFAULT_LYRICS_MODEL}; {SMALL_LYRICS_MODEL} for small machines; with a tiny model, "
        "the tiny test writer)",
    )
    parser.add_argument(
        "--speech-model",
        default=None,
        help=f"the lyrics check's Whisper: a Hub repo id or a local folder (default ${SPEECH_ENV_VAR}, else "
        "whisper-large-v3-turbo on a GPU over 12 GB, whisper-base elsewhere; with a tiny model, the tiny test Whisper)",
    )
    parser.add_argument(
        "--lm-backend",
        choices=BACKENDS,
        default="auto",
        help="for the planner and the lyrics writer; auto: mlx-lm on Apple Silicon when installed, else transformers",
    )
    parser.add_argument("--mcp", action="store_true", help="also serve the endpoints as an MCP server")
    parser.add_argument("--compile", action="store_true", help="torch.compile the DiT blocks (CUDA)")
    parser.add_argument(
        "--no-preload",
        action="store_true",
        help="load the model on first use, not at start",
    )
    return parser.parse_args(argv)


def make_studio(args: argparse.Namespace) -> Studio:
    spec = resolve_model(args.model)
    device = backend_module.pick_device(args.device) if args.device else None
    backend = Backend(spec, device=device, offload=args.offload or args.low_vram, compile_dit=args.compile)
    on_cpu = args.low_vram or args.device == "cpu"
    planner_name = args.planner
    if not (spec.is_tiny and planner_name is None):
        device = "cpu" if on_cpu else backend.device.device
        choice = choose_planner(planner_name, device, gpu_memory_gb(device))
        print(f"{STUDIO_NAME}: {choice.reason}", file=sys.stderr)
        planner_name = choice.name or "none"
    planner = make_planner(planner_name, spec.is_tiny, args.lm_backend, on_cpu)
    lyrics = make_lyrics_writer(args.lyrics_model, spec.is_tiny, args.lm_backend, on_cpu)
    store = OutputStore(args.outputs or default_outputs_dir(), private_ids=on_space())
    # The lyrics check's Whisper on the planner's device rules (the CPU in the low-VRAM profile).
    ears = backend_module.DeviceInfo("cpu", "float32") if on_cpu or spec.is_tiny else backend.device
    speech, heard = make_recogniser(args.speech_model, ears, gpu_memory_gb(ears.device), tiny=spec.is_tiny)
    print(f"{STUDIO_NAME}: {heard.reason}", file=sys.stderr)
    return Studio(backend=backend, store=store, planner=planner, lyrics=lyrics, speech=speech)


def gpu_memory_gb(device: str) -> float | None:
    """The GPU's memory in GiB (as the official tiers count it), or None on the CPU or when unknown.
    ``$MAX_CUDA_VRAM`` / ``$MAX_MPS_VRAM`` stand in for it, as in the official code (to try a tier)."""
    override = os.environ.get("MAX_MPS_VRAM" if device == "mps" else "MAX_CUDA_VRAM")
    if device != "cpu" and override:
        return float(override)
    if device == "cuda":
        import torch

        return torch.cuda.get_device_properties(0).total_memory / 1024**3
    if device == "mps":
        import torch

        recommended = getattr(torch.mps, "recommended_max_memory", None)
        return recommended() / 1024**3 if recommended is not None else None
    return None


def make_lyrics_writer(name: str | None, tiny: bool, backend: str = "auto", on_cpu: bool = False) -> LyricsLM | None:
    """The lyrics writer, not loaded yet: the named model, the tiny test LM beside a tiny DiT, or none."""
    if name is not None and name.lower() == "none":
        return None
    if name is None and tiny:
        return LyricsLM(str(tiny_lyrics_dir()), backend="transformers", device="cpu", loader=_load_tiny_lyrics)
    return LyricsLM(name or DEFAULT_LYRICS_MODEL, backend=backend, device="cpu" if on_cpu else None)


def _load_tiny_lyrics(source: str, backend: str, device: str | None):
    """Build the tiny test writer on first use (a second), then load it like any LM."""
    ensure_tiny_lyrics_lm(Path(source).parent)
    return load_lm(source, backend, device)


TINY_PLANNER_CAPTION_TOKENS = 24  # a random-weight LM rarely ends its caption by itself


def make_planner(name: str | None, tiny: bool, backend: str = "auto", on_cpu: bool = False) -> Planner | None:
    """The planner for Think, not loaded yet: the named one, the tiny test LM beside a tiny
    DiT, or none. ``on_cpu`` keeps a transformers planner off the GPU (the low-VRAM profile)."""
    if name is not None and name.lower() == "none":
        return None
    device = "cpu" if on_cpu else None
    if name is None and tiny:
        return Planner(
            str(tiny_planner_dir()),
            backend="transformers",
            loader=_load_tiny_planner,
            max_caption_tokens=TINY_PLANNER_CAPTION_TOKENS,
        )
    return Planner(name or DEFAULT_LM, backend=backend, device=device)


def _load_tiny_planner(source: str, backend: str):
    """Build the tiny test planner on first use (a few seconds), then load it like any LM."""
    ensure_tiny_planner(Path(source).parent)
    return load_lm(source, backend, device="cpu")
