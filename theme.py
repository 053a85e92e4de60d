"""The "Brutalist Mono" look: monospace type, near-black and white, square corners, 2 px
rules, one red for what destroys. Dark by default; a button in the header switches to light
and the browser remembers the choice (``localStorage``).

Colours live in the theme (``brutalist_mono``), for both modes: Gradio applies the ``*_dark``
values under ``body.dark``. The CSS below sizes and places only the studio's own
``elem_classes`` (Gradio's generated class names change between releases); inside them it
names plain HTML elements (``button``, ``input[type=checkbox]``), never a generated class.
Every text colour here meets WCAG AA (4.5:1) on the background it sits on;
``tests/test_browser_look.py`` measures the page in both modes.
"""

from __future__ import annotations

import gradio as gr

# Local font names only: the studio must look right offline and on a LAN.
MONO_STACK = ["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "Liberation Mono", "monospace"]
FONT_STACK = MONO_STACK

INK = "#0a0a0a"  # near-black: light mode's text, dark mode's page
PAPER = "#f5f5f5"  # near-white: dark mode's text, light mode's inputs
LIGHT_SUBDUED = "#4d4d4d"  # help text: 8.5:1 on white, 7.5:1 on PAPER
DARK_SUBDUED = "#b8b8b8"  # help text: 10:1 on INK, 8.8:1 on DARK_INPUT
DARK_INPUT = "#1a1a1a"
DARK_SELECTED = "#525252"  # a ticked box in dark mode: Gradio's tick is white (7.8:1)
LIGHT_DANGER = "#b00020"  # 7.3:1 on white
DARK_DANGER = "#ff8a80"  # 8.7:1 on INK
THEME_STORAGE_KEY = "ace-studio-theme"
EMPTY_NUMBER_CLASS = "empty-number"  # a number box whose 0 means unset (ui.controls.OPTIONAL_NUMBERS)
TAP_PX = 44  # the smallest touch target (WCAG 2.5.5, Apple and Android guidance)

# Every colour that differs by mode, as (light, dark); applied as ``name`` and ``name_dark``.
MODE_COLOURS: dict[str, tuple[str, str]] = {
    "body_background_fill": ("#ffffff", INK),
    "background_fill_primary": ("#ffffff", INK),
    "background_fill_secondary": ("#ffffff", INK),
    "block_background_fill": ("#ffffff", INK),
    "panel_background_fill": ("#ffffff", INK),
    "body_text_color": (INK, PAPER),
    "body_text_color_subdued": (LIGHT_SUBDUED, DARK_SUBDUED),
    "block_info_text_color": (LIGHT_SUBDUED, DARK_SUBDUED),
    "block_label_text_color": (INK, PAPER),
    "block_title_text_color": (INK, PAPER),
    "block_label_background_fill": ("#ffffff", INK),
    "block_label_border_color": (INK, PAPER),
    "block_border_color": (INK, PAPER),
    "border_color_primary": (INK, PAPER),
    "border_color_accent": (INK, PAPER),
    "color_accent_soft": (PAPER, DARK_INPUT),
    "link_text_color": (INK, PAPER),
    "link_text_color_hover": (LIGHT_SUBDUED, DARK_SUBDUED),
    "link_text_color_visited": (INK, PAPER),
    "code_background_fill": (PAPER, DARK_INPUT),
    "input_background_fill": (PAPER, DARK_INPUT),
    "input_background_fill_focus": ("#ffffff", INK),
    "input_border_color": (INK, PAPER),
    "input_border_color_focus": (INK, PAPER),
    "input_border_color_hover": (INK, PAPER),
    "input_placeholder_color": (LIGHT_SUBDUED, DARK_SUBDUED),
    "table_even_background_fill": ("#ffffff", INK),
    "table_odd_background_fill": (PAPER, DARK_INPUT),
    "table_border_color": (INK, PAPER),
    # Unticked boxes show a 2 px frame in the text colour; ticked ones are filled.
    "checkbox_background_color": ("#ffffff", INK),
    "checkbox_background_color_hover": (PAPER, DARK_INPUT),
    "checkbox_background_color_focus": ("#ffffff", INK),
    "checkbox_background_color_selected": (INK, DARK_SELECTED),
    "checkbox_border_color": (INK, PAPER),
    "checkbox_border_color_hover": (INK, PAPER),
    "checkbox_border_color_focus": (INK, PAPER),
    "checkbox_border_color_selected": (INK, PAPER),
    "checkbox_label_background_fill": ("#ffffff", INK),
    "checkbox_label_background_fill_hover": (PAPER, DARK_INPUT),
    "checkbox_label_background_fill_selected": ("#ffffff", INK),
    "checkbox_label_border_color": (INK, PAPER),
    "checkbox_label_text_color": (INK, PAPER),
    "checkbox_label_text_color_selected": (INK, PAPER),
    # Primary: filled. Secondary: outlined in the text colour (never grey, which reads as
    # disabled). Destructive ("stop"): outlined and lettered in red.
    "button_primary_background_fill": (INK, PAPER),
    "button_primary_background_fill_hover": ("#333333", "#d4d4d4"),
    "button_primary_border_color": (INK, PAPER),
    "button_primary_text_color": ("#ffffff", INK),
    "button_primary_text_color_hover": ("#ffffff", INK),
    "button_secondary_background_fill": ("#ffffff", INK),
    "button_secondary_background_fill_hover": (PAPER, DARK_INPUT),
    "button_secondary_border_color": (INK, PAPER),
    "button_secondary_border_color_hover": (INK, PAPER),
    "button_secondary_text_color": (INK, PAPER),
    "button_secondary_text_color_hover": (INK, PAPER),
    "button_cancel_background_fill": ("#ffffff", INK),
    "button_cancel_background_fill_hover": (LIGHT_DANGER, DARK_DANGER),
    "button_cancel_border_color": (LIGHT_DANGER, DARK_DANGER),
    "button_cancel_border_color_hover": (LIGHT_DANGER, DARK_DANGER),
    "button_cancel_text_color": (LIGHT_DANGER, DARK_DANGER),
    "button_cancel_text_color_hover": ("#ffffff", INK),
    "error_background_fill": ("#ffffff", INK),
    "error_border_color": (LIGHT_DANGER, DARK_DANGER),
    "error_text_color": (LIGHT_DANGER, DARK_DANGER),
    "error_icon_color": (LIGHT_DANGER, DARK_DANGER),
    "loader_color": (INK, PAPER),
    "slider_color": (INK, PAPER),
    "stat_background_fill": (PAPER, DARK_INPUT),
    "accordion_text_color": (INK, PAPER),
    "table_text_color": (INK, PAPER),
}

# The same in both modes: shape and weight.
SHAPE: dict[str, str] = {
    "block_border_width": "2px",
    "block_label_border_width": "2px",
    "block_title_text_weight": "700",
    "block_label_text_weight": "700",
    "block_shadow": "none",
    "block_label_shadow": "none",
    "input_border_width": "2px",
    "input_shadow": "none",
    "input_shadow_focus": "none",
    "checkbox_border_width": "2px",
    "checkbox_label_border_width": "2px",
    "checkbox_shadow": "none",
    "checkbox_label_shadow": "none",
    "button_border_width": "2px",
    "button_primary_shadow": "none",
    "button_secondary_shadow": "none",
    "button_cancel_shadow": "none",
    "button_large_text_weight": "700",
    "button_medium_text_weight": "700",
    "button_small_text_weight": "700",
    "shadow_drop": "none",
    "shadow_drop_lg": "none",
    "shadow_spread": "0px",
}


def theme_values() -> dict[str, str]:
    """Every variable ``brutalist_mono`` sets, light and ``_dark`` alike."""
    values = dict(SHAPE)
    for name, (light, dark) in MODE_COLOURS.items():
        values[name] = light
        values[f"{name}_dark"] = dark
    return values


def brutalist_mono() -> gr.themes.Base:
    return gr.themes.Base(
        primary_hue=gr.themes.colors.neutral,
        secondary_hue=gr.themes.colors.neutral,
        neutral_hue=gr.themes.colors.neutral,
        radius_size=gr.themes.sizes.radius_none,
        font=FONT_STACK,
        font_mono=MONO_STACK,
    ).set(**theme_values())


# Dark unless this browser chose light. Gradio sets ``body.dark`` from the OS once it has
# mounted (and again when the OS switches); the observer puts the studio's choice back. A
# ``?__theme=`` in the address (Gradio's own settings panel) still wins.
THEME_HEAD = f"""
<script>
(() => {{
  const KEY = '{THEME_STORAGE_KEY}';
  const wanted = () => {{
    const asked = new URLSearchParams(window.location.search).get('__theme');
    if (asked === 'dark' || asked === 'light') return asked;
    try {{ return localStorage.getItem(KEY) === 'light' ? 'light' : 'dark'; }} catch (e) {{ return 'dark'; }}
  }};
  // The toggle's accessible name keeps its visible words and says what a press does.
  const label = (dark) => {{
    const toggle = document.getElementById('theme-toggle');
    if (!toggle) return false;
    toggle.setAttribute('aria-label', 'Light / dark: switch to the ' + (dark ? 'light' : 'dark') + ' theme');
    toggle.setAttribute('aria-pressed', String(!dark));
    return true;
  }};
  const apply = () => {{
    const dark = wanted() === 'dark';
    if (document.body.classList.contains('dark') !== dark) document.body.classList.toggle('dark', dark);
    document.documentElement.style.colorScheme = dark ? 'dark' : 'light';
    label(dark);
  }};
  // The fixed action bar (LOOP_CSS) must never cover the end of the page: the page keeps a
  // bottom padding of the bar's own height (0 where the bar is hidden, on the Lyrics tab).
  let bar = null;
  const fit = () => {{
    document.body.style.paddingBottom = (bar && bar.isConnected ? bar.offsetHeight : 0) + 'px';
  }};
  const sizes = new ResizeObserver(fit);
  const watchBar = () => {{
    const now = document.getElementById('action-bar');
    if (now === bar) return;
    if (bar) sizes.unobserve(bar);
    bar = now;
    if (bar) sizes.observe(bar);
    fit();
  }};
  // A number box that may be unset shows empty, not the 0 Gradio's box takes for an empty value
  // each time it mounts (a hidden tab's boxes mount when it is shown). The request reads that 0
  // as unset anyway, so emptying it changes only what the box shows.
  const settled = new WeakSet();
  const blankNumbers = () => {{
    for (const box of document.querySelectorAll('.{EMPTY_NUMBER_CLASS} input[type=number]')) {{
      if (settled.has(box) || box.value === '') continue;
      settled.add(box);
      if (box.value === '0') {{ box.value = ''; box.dispatchEvent(new Event('input', {{bubbles: true}})); }}
    }}
  }};
  window.aceStudioTheme = {{
    toggle() {{
      const next = document.body.classList.contains('dark') ? 'light' : 'dark';
      try {{ localStorage.setItem(KEY, next); }} catch (e) {{}}
      const url = new URL(window.location.href);
      if (url.searchParams.has('__theme')) {{
        url.searchParams.delete('__theme');
        window.history.replaceState(null, '', url);
      }}
      apply();
    }},
  }};
  const start = () => {{
    apply();
    new MutationObserver(apply).observe(document.body, {{attributes: true, attributeFilter: ['class']}});
    // Gradio mounts the page after this script, and may mount the toggle and the bar again.
    let toggle = null;
    new MutationObserver(() => {{
      watchBar();
      blankNumbers();
      setTimeout(blankNumbers, 100);  // a box mounted empty takes its value just after
      const now = document.getElementById('theme-toggle');
      if (now !== toggle && label(document.body.classList.contains('dark'))) toggle = now;
    }}).observe(document.body, {{childList: true, subtree: true}});
  }};
  if (document.body) start(); else document.addEventListener('DOMContentLoaded', start);
}})();
</script>
<script>
// The finished take is scrolled into view once (ui.takes.SCROLL_TO_TAKE_JS), and only where it is out
// of sight and the user has neither moved the page since the run began (or since the page loaded:
// a run reattached after a reload) nor is typing: the page never yanks a reader away.
(() => {{
  let moved = false;
  const move = () => {{ moved = true; }};
  const editable = (el) => !!el && (el.isContentEditable || el.tagName === 'TEXTAREA' || el.tagName === 'SELECT'
    || (el.tagName === 'INPUT' && !['button', 'checkbox', 'radio', 'range', 'submit'].includes(el.type)));
  const KEYS = ['PageUp', 'PageDown', 'Home', 'End', 'ArrowUp', 'ArrowDown', ' '];
  window.addEventListener('wheel', move, {{passive: true, capture: true}});
  window.addEventListener('touchmove', move, {{passive: true, capture: true}});
  window.addEventListener('keydown', (e) => {{
    if (KEYS.includes(e.key) && !editable(e.target) && !(e.target.closest && e.target.closest('button'))) move();
  }}, true);
  window.addEventListener('pointerdown', (e) => {{ if (e.target === document.documentElement) move(); }}, true);
  document.addEventListener('click', (e) => {{
    if (e.target.closest && e.target.closest('#generate, #retake, #vary')) moved = false;
  }}, true);
  const inView = (el) => {{
    const box = el.getBoundingClientRect(), bar = document.getElementById('action-bar');
    const bottom = bar && bar.offsetHeight ? bar.getBoundingClientRect().top : window.innerHeight;
    return box.height > 0 && box.top >= 0 && box.bottom <= bottom;
  }};
  window.aceStudioLoop = {{
    showTake() {{
      const take = document.querySelector('#take1');
      if (!take || moved || editable(document.activeElement) || inView(take)) return false;
      take.scrollIntoView({{block: 'center'}});
      return true;
    }},
  }};
}})();
</script>
<style>
/* Gradio's footer (API, settings) lies outside the scope ``css=`` reaches. */
@media (max-width: 640px), (pointer: coarse) {{
  footer > a, footer > button {{ min-height: {TAP_PX}px; display: inline-flex; align-items: center; }}
}}
</style>
"""


def theme_toggle() -> gr.Button:
    """The header's light/dark switch: runs in the browser only, no server round trip."""
    button = gr.Button(
        "Light / dark", variant="secondary", size="sm", scale=0, min_width=120,
        elem_id="theme-toggle", elem_classes="theme-toggle",
    )  # fmt: skip
    button.click(None, js="() => { window.aceStudioTheme && window.aceStudioTheme.toggle(); }", queue=False)
    return button


# Layout: a mode sidebar beside form and output on wide screens; below 640 px the sidebar
# becomes a horizontal strip of pills that fades at its right edge to show it scrolls.
# Gradio's rows wrap columns narrower than their min_width, which stacks form and output on
# tablets without any CSS. Colours come from the theme's variables, so both modes follow.
CSS = f"""
.studio-header {{ border-bottom: 2px solid var(--body-text-color); padding-bottom: 0.5rem; align-items: center; }}
.studio-status {{ font-size: 0.9rem; }}
.test-model-banner {{ border: 2px dashed var(--body-text-color); padding: 0.5rem 0.75rem; font-weight: 700; }}
.studio-actions button, .share-row button {{ min-height: {TAP_PX}px; }}
.studio-takes audio {{ max-width: 100%; }}
.studio-takes, .studio-form {{ max-width: 100%; overflow-wrap: anywhere; }}
/* Gradio's bare red "Error" badge over a failed event's outputs says nothing: the failure's words
   are in the studio's message (the toast, or the run's line beside the buttons). */
.studio-body [data-testid="status-tracker"] .error, .studio-actions-bar [data-testid="status-tracker"] .error {{
  display: none; }}
.control-help {{ font-size: 0.85rem; color: var(--body-text-color-subdued); }}
.control-help p {{ color: var(--body-text-color-subdued); }}
.fit-meter {{ font-size: 0.9rem; }}
.mode-nav label {{ min-height: {TAP_PX}px; display: flex; align-items: center; cursor: pointer;
  border: 2px solid var(--body-text-color); padding: 0 0.9rem; margin: 0 0 0.4rem 0; font-weight: 700;
  background: var(--body-background-fill); color: var(--body-text-color); }}
.mode-nav label:has(input:checked) {{ background: var(--button-primary-background-fill);
  color: var(--button-primary-text-color); }}
.mode-nav input {{ position: absolute; opacity: 0; width: 1px; height: 1px; }}
.mode-nav label:focus-within {{ outline: 3px solid var(--body-text-color); outline-offset: 2px; }}
/* Checkboxes a touch larger than Gradio's 16 px, so an unticked frame is easy to see. */
.studio-body input[type=checkbox], .studio-body input[type=radio] {{ width: 20px; height: 20px; }}
@media (min-width: 641px) {{
  .studio-sidebar .mode-nav > div, .studio-sidebar .mode-nav fieldset > div {{ flex-direction: column; }}
}}
/* Touch: every control of the page is at least {TAP_PX} px both ways, or its label is. */
@media (max-width: 640px), (pointer: coarse) {{
  .studio-header button, .studio-body button, .studio-body select,
  .studio-body input[type=number], .studio-body input[type=text], .studio-body input[role=combobox] {{
    min-height: {TAP_PX}px; min-width: {TAP_PX}px; }}
  .studio-body button {{ align-items: center; }}  /* a taller accordion header keeps its arrow inside */
  .studio-body label:has(input[type=checkbox]), .studio-body label:has(input[type=radio]) {{
    min-height: {TAP_PX}px; display: flex; align-items: center; }}
  .studio-body input[type=range] {{ min-height: {TAP_PX}px; }}
}}
@media (max-width: 640px) {{
  .studio-header {{ flex-wrap: wrap; }}
  .studio-header .studio-status {{ order: 3; flex-basis: 100%; }}
  .studio-sidebar {{ min-width: 100% !important; flex-basis: 100% !important; position: relative; }}
  .mode-nav > div, .mode-nav fieldset > div {{ flex-direction: row; flex-wrap: nowrap; overflow-x: auto; gap: 0.4rem;
    padding-right: 2.5rem; scrollbar-width: thin; }}
  .mode-nav label {{ margin: 0; white-space: nowrap; }}
  /* The strip scrolls: its right edge fades into the page, with an arrow. */
  .studio-sidebar::after {{ content: "\\203A"; position: absolute; top: 0; right: 0; bottom: 0; width: 2.5rem;
    display: flex; align-items: center; justify-content: flex-end; padding-right: 0.3rem; font-size: 1.6rem;
    font-weight: 700; pointer-events: none; color: var(--body-text-color);
    background: linear-gradient(to right, transparent, var(--body-background-fill) 60%); }}
}}
"""

# The main loop in one place (ui.layout): the action bar is fixed at the foot of the screen while
# the form scrolls (fixed, not sticky: Gradio's container hides overflow, which ends sticky),
# with the run's stage beside the buttons.
LOOP_CSS = """
.studio-actions-bar { position: fixed; left: 0; right: 0; bottom: 0; z-index: 20; margin: 0 !important;
  padding: 0.4rem max(1rem, calc(50vw - 680px)); background: var(--body-background-fill, #ffffff);
  border-top: 2px solid currentColor; gap: 0.3rem !important; }
.studio-actions-bar .studio-actions { max-width: 640px; flex-wrap: nowrap; }
.studio-actions-bar .run-progress { background: inherit; margin: 0; padding: 0; }
/* Wide screens: the stage beside the buttons, one short bar. Phones: the stage under them, without
   the list of stages (the bar stays under a sixth of the screen). */
@media (min-width: 641px) {
  .studio-actions-bar { flex-direction: row !important; align-items: center; flex-wrap: nowrap !important; }
  .studio-actions-bar .studio-actions { flex: 0 0 auto; width: min(640px, 48%); }
  .studio-actions-bar .run-progress { flex: 1 1 0; min-width: 0; }
}
@media (max-width: 640px) {
  .share-row { flex-wrap: wrap; }  /* the link's box takes the whole width: its hint is three lines */
  .share-row > * { flex: 1 1 100% !important; }
  .studio-actions-bar .run-progress br, .studio-actions-bar .run-progress .run-stages { display: none; }
}
.run-progress { font-family: ui-monospace, Menlo, monospace; font-size: 0.9rem; min-height: 1.4em; }
.run-progress .run-stages { opacity: 0.85; font-size: 0.8rem; }
.test-model-banner { padding: 0.2rem 0.6rem; font-size: 0.9rem; }
.test-model-banner p { margin: 0; }
/* A take's player: Gradio letters its times (by id) and speed in a grey under AA on white (2.5:1). */
.studio-takes .take-player time#time, .studio-takes .take-player time#duration {
  color: var(--body-text-color-subdued); }
.take-player button, .take-player button span { color: var(--body-text-color); }
/* A take's downloads: one column of links of one width, each row's name and link on one line.
   Touch: each link (its size and arrow, 16 px tall in Gradio) a 44 px target. The list only
   offers files, so its per-row remove button (shown even on an output) is left out. */
.take-downloads tr, .take-downloads td.filename { align-items: center; }
.take-downloads td { vertical-align: middle !important; }
.take-downloads td.download { width: 9rem; }
.take-downloads a[download] { display: flex; justify-content: flex-end; align-items: center; width: 100%;
  box-sizing: border-box; }
.take-downloads .label-clear-button, .take-downloads td:has(> .label-clear-button) { display: none; }
@media (max-width: 640px), (pointer: coarse) {
  .studio-takes a[download] { min-height: 44px; min-width: 44px; }
}
/* A button that waits for something (Vary before a run) reads as waiting, dashed and grey, yet
   stays legible (AA): Gradio's half opacity would put its words at 3.6:1. */
.studio-body button:disabled { opacity: 1; background: var(--body-background-fill);
  color: var(--body-text-color-subdued); border: 2px dashed var(--body-text-color-subdued); }
"""
