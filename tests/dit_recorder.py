"""Record what the DiT is called with: per call, the batch, the timestep, and which condition it got.

A forward pre-hook on the tiny pipeline's transformer (no patching): ``calls`` lists one
``DitCall`` per forward. The condition is told by the context latents: the cover condition's
context is the source's (detokenised) latents, text-to-music's is the tiled silence latent; a
guided call stacks the conditional and the null halves in one batch (the null half's encoder
states are the learned null condition).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field


@dataclass(frozen=True)
class DitCall:
    batch: int  # rows the DiT ran (2x the takes when guided)
    timestep: float
    condition: str  # "text2music" (silence context) or "cover" (anything else as context)
    guided: bool  # conditional and null halves in one batch


@dataclass
class DitRecorder:
    takes: int
    calls: list[DitCall] = field(default_factory=list)

    @property
    def timesteps(self) -> list[float]:
        return [call.timestep for call in self.calls]

    @contextlib.contextmanager
    def on(self, pipe) -> Iterator[DitRecorder]:
        import torch

        silence = pipe.condition_encoder.silence_latent
        null = pipe.condition_encoder.null_condition_emb

        def record(module, args, kwargs) -> None:
            hidden, context = kwargs["hidden_states"], kwargs["context_latents"]
            frames, channels = context.shape[1], hidden.shape[-1]
            tiled = silence.repeat(1, -(-frames // silence.shape[1]), 1)[:, :frames].to(context.dtype)
            is_silence = torch.allclose(context[0, :, :channels], tiled[0])
            states = kwargs["encoder_hidden_states"]
            guided = hidden.shape[0] == 2 * self.takes and torch.allclose(
                states[self.takes :], null.to(states.dtype).expand_as(states[self.takes :])
            )
            self.calls.append(
                DitCall(
                    hidden.shape[0],
                    round(float(kwargs["timestep"][0]), 6),
                    "text2music" if is_silence else "cover",
                    guided,
                )
            )

        handle = pipe.transformer.register_forward_pre_hook(record, with_kwargs=True)
        try:
            yield self
        finally:
            handle.remove()
