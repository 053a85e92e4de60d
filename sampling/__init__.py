"""The DiT's sampling as the official ACE-Step 1.5 code defines it, on top of diffusers' pipeline.

diffusers' ``AceStepPipeline`` runs one Euler loop; the official studio's semantics differ in
places (FACTS.md). This package holds what the studio adds or maps so that a run follows the
official code: the timestep schedule (``schedule``), the per-step latent corrections DCW and
SDE re-noising (``dcw``, ``stepper``), ADG guidance (``guidance``), and the plan that turns a
request into one or more pipeline calls (``plan``, run by ``Backend.generate``).
"""
