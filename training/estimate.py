"""What a training run will cost before it starts: memory (a second DiT to train, the adapter with
AdamW's state, the activations of the longest clip) and, on a ZeroGPU Space, what fits there.

The figures are estimates from the DiT's own sizes, stated as such: activations follow the usual
transformer rule of thumb (about 34 values per token and hidden unit per layer kept for the backward
pass; with gradient checkpointing, as on CUDA, one layer's worth plus each layer's input), with a
quarter added for the cross-attention and the allocator.
"""

from __future__ import annotations

from dataclasses import dataclass

from training.adapter import DIFFUSERS_TARGETS

LATENT_FRAMES_PER_S = 25
ACTIVATION_VALUES_PER_TOKEN_UNIT = 34  # per layer, kept for the backward pass without checkpointing
ACTIVATION_MARGIN = 1.25
ADAMW_BYTES_PER_PARAM = 16  # float32 weight, gradient and AdamW's two moments
GB = 1024**3
ZEROGPU_REQUEST_S = 300  # ZeroGPU caps one GPU request near this (FACTS.md)


@dataclass(frozen=True)
class MemoryEstimate:
    dit_bytes: int  # the copy of the DiT that trains (the studio's own stays as it was)
    adapter_bytes: int  # the adapter's weights, gradients and AdamW state
    activation_bytes: int
    device: str

    @property
    def total_bytes(self) -> int:
        return self.dit_bytes + self.adapter_bytes + self.activation_bytes

    def words(self, free_bytes: int | None = None) -> str:
        place = "GPU memory" if self.device == "cuda" else "memory"
        line = (
            f"About **{size(self.total_bytes)}** more {place} while it trains: a copy of the DiT to train "
            f"({size(self.dit_bytes)}), the adapter with its optimiser ({size(self.adapter_bytes)}), "
            f"activations for the longest song ({size(self.activation_bytes)}); the studio's model stays loaded."
        )
        if free_bytes is not None:
            verdict = "fits" if free_bytes > self.total_bytes else "**does not fit**: use shorter songs or a bigger GPU"
            line += f" Free now: {size(free_bytes)}, so it {verdict}."
        return line


def size(count: int) -> str:
    """Bytes in the unit a person reads: GB from a tenth of one, else MB."""
    return f"{count / GB:.1f} GB" if count >= GB / 10 else f"{max(count / 1024**2, 0.1):.1f} MB"


def adapter_parameters(transformer, kind: str, rank: int) -> int:
    """How many weights the adapter adds on the DiT's attention projections (seen through the
    wrappers of adapters the studio has loaded)."""
    from lora.check import target_modules
    from lora.lokr import expected_shapes

    total = 0
    for name, (in_features, out_features) in target_modules(transformer).items():
        if not name.endswith(tuple(f".{t}" for t in DIFFUSERS_TARGETS)):
            continue
        if kind == "lokr":
            shapes = expected_shapes(in_features, out_features, rank, -1, False)
            total += sum(a * b for a, b in shapes.values())
        else:
            total += rank * (in_features + out_features)
    return total


def memory_estimate(transformer, kind: str, rank: int, longest_s: float, device: str) -> MemoryEstimate:
    """The memory a run on ``transformer`` needs beyond what the studio holds already."""
    config = transformer.config
    value_bytes = 2 if device == "cuda" else 4  # bf16 on CUDA, float32 elsewhere (as the trainer runs)
    # The base weights only: adapters the studio has loaded are dropped by the copy that trains.
    params = sum(
        p.numel() for name, p in transformer.named_parameters() if ".lora_" not in name and ".lokr_" not in name
    )
    tokens = LATENT_FRAMES_PER_S * longest_s / max(1, int(getattr(config, "patch_size", 1) or 1))
    layer_values = tokens * int(config.hidden_size)
    layers = int(config.num_hidden_layers)
    if device == "cuda":  # gradient checkpointing: each layer's input, and one layer's full set
        values = layer_values * (layers + ACTIVATION_VALUES_PER_TOKEN_UNIT)
    else:
        values = layer_values * layers * ACTIVATION_VALUES_PER_TOKEN_UNIT
    return MemoryEstimate(
        dit_bytes=params * value_bytes,
        adapter_bytes=adapter_parameters(transformer, kind, rank) * ADAMW_BYTES_PER_PARAM,
        activation_bytes=int(values * value_bytes * ACTIVATION_MARGIN),
        device=device,
    )


def free_memory_bytes(device: str) -> int | None:
    """Free GPU memory on CUDA; None elsewhere (the system's memory is shared with everything else)."""
    if device != "cuda":
        return None
    import torch

    free, _ = torch.cuda.mem_get_info()
    return int(free)


ZEROGPU_NOTE = (
    "**Training is not available on this ZeroGPU Space.** ZeroGPU lends its GPU one request at a time, "
    f"each cut off near {ZEROGPU_REQUEST_S} s, and gives the model back between requests. Preparing a few "
    "songs fits in that, but training does not: the official defaults (rank 8, 100 epochs) take from many "
    "minutes to hours, and a live loss curve, Stop and samples need the GPU held throughout. "
    "**What you can do here**: build the dataset, Check every song, fill captions and lyrics with Describe, "
    "and read the memory estimate. **Then train** on your own machine or on a Space with a dedicated GPU "
    "(`python -m training train SONGS --out my-style`, or this tab there) and add the adapter folder "
    "(its two files, or the folder as a .zip) in the LoRA panel here."
)
