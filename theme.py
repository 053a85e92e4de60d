"""The "Brutalist Mono" look: near-black and white, no accent colour, visible focus.

The theme is set in code; the CSS below targets only the studio's own ``elem_classes``
(Gradio's generated class names change between releases).
"""

from __future__ import annotations

import gradio as gr

# Local font names only: the studio must look right offline and on a LAN.
FONT_STACK = ["Inter", "system-ui", "-apple-system", "Segoe UI", "sans-serif"]
MONO_STACK = ["ui-monospace", "SFMono-Regular", "Menlo", "monospace"]


def brutalist_mono() -> gr.themes.Base:
    return gr.themes.Base(
        primary_hue=gr.themes.colors.neutral,
        secondary_hue=gr.themes.colors.neutral,
        neutral_hue=gr.themes.colors.neutral,
        radius_size=gr.themes.sizes.radius_none,
        font=FONT_STACK,
        font_mono=MONO_STACK,
    ).set(
        body_background_fill="#ffffff",
        body_text_color="#0a0a0a",
        block_border_width="2px",
        block_border_color="#0a0a0a",
        button_primary_background_fill="#0a0a0a",
        button_primary_background_fill_hover="#333333",
        button_primary_text_color="#ffffff",
        button_secondary_background_fill="#ffffff",
        button_secondary_border_color="#0a0a0a",
        button_secondary_text_color="#0a0a0a",
        checkbox_border_color="#0a0a0a",
        checkbox_border_width="2px",
        checkbox_background_color_selected="#0a0a0a",
        input_border_color_focus="#0a0a0a",
        input_border_width="2px",
        body_background_fill_dark="#0a0a0a",
        body_text_color_dark="#f5f5f5",
        block_border_color_dark="#f5f5f5",
        button_primary_background_fill_dark="#f5f5f5",
        button_primary_text_color_dark="#0a0a0a",
    )


# Layout: a mode sidebar beside form and output on wide screens; below 640 px the sidebar
# becomes a horizontal strip of pills. Gradio's rows wrap columns narrower than their
# min_width, which stacks form and output on tablets without any CSS.
CSS = """
.studio-header { border-bottom: 2px solid currentColor; padding-bottom: 0.5rem; }
.studio-status { font-family: ui-monospace, Menlo, monospace; font-size: 0.9rem; }
.test-model-banner { border: 2px dashed currentColor; padding: 0.5rem 0.75rem; font-weight: 600; }
.studio-actions button, .share-row button { min-height: 44px; }
.studio-takes audio { max-width: 100%; }
.studio-takes, .studio-form { max-width: 100%; overflow-wrap: anywhere; }
/* A slider's end labels ("10", "600") must not break digit by digit. */
.studio-form [data-testid="min-value"], .studio-form [data-testid="max-value"] {
  overflow-wrap: normal; white-space: nowrap; }
.control-help { font-size: 0.85rem; opacity: 0.75; }
.fit-meter { font-family: ui-monospace, Menlo, monospace; font-size: 0.9rem; }
.mode-nav label { min-height: 44px; display: flex; align-items: center; cursor: pointer;
  border: 2px solid currentColor; padding: 0 0.9rem; margin: 0 0 0.4rem 0; font-weight: 600; }
.mode-nav label:has(input:checked) { background: #0a0a0a; color: #ffffff; }
.mode-nav input { position: absolute; opacity: 0; width: 1px; height: 1px; }
.mode-nav label:focus-within { outline: 3px solid #0a0a0a; outline-offset: 2px; }
@media (min-width: 641px) {
  .studio-sidebar .mode-nav > div, .studio-sidebar .mode-nav fieldset > div { flex-direction: column; }
}
@media (max-width: 640px) {
  .studio-sidebar { min-width: 100% !important; flex-basis: 100% !important; }
  .mode-nav > div, .mode-nav fieldset > div { flex-direction: row; flex-wrap: nowrap; overflow-x: auto; gap: 0.4rem; }
  .mode-nav label { border-radius: 999px; margin: 0; white-space: nowrap; }
}
@media (prefers-color-scheme: dark) {
  .mode-nav label:has(input:checked) { background: #f5f5f5; color: #0a0a0a; }
  .mode-nav label:focus-within { outline-color: #f5f5f5; }
}
"""

# The main loop in one place (ui.layout): the action bar is fixed at the foot of the screen while
# the form scrolls (fixed, not sticky: Gradio's container hides overflow, which ends sticky),
# with the run's stage beside the buttons.
LOOP_CSS = """
.studio-actions-bar { position: fixed; left: 0; right: 0; bottom: 0; z-index: 20; margin: 0 !important;
  padding: 0.4rem max(1rem, calc(50vw - 680px)); background: var(--body-background-fill, #ffffff);
  border-top: 2px solid currentColor; }
.studio-actions-bar .studio-actions { max-width: 640px; flex-wrap: nowrap; }
.studio-actions-bar .run-progress { background: inherit; }
.studio-body { margin-bottom: 7.5rem; }
.run-progress { font-family: ui-monospace, Menlo, monospace; font-size: 0.9rem; min-height: 1.4em; }
.run-progress .run-stages { opacity: 0.85; font-size: 0.8rem; }
.test-model-banner { padding: 0.2rem 0.6rem; font-size: 0.9rem; }
.test-model-banner p { margin: 0; }
"""
