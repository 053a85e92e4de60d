"""In-page measurements for the look tests (``test_browser_look.py``): the contrast of every
visible text against what lies behind it, and the size of every visible control's hit area.

Each is a JavaScript function for playwright's ``page.evaluate``; each returns the offenders,
worst first, so a failing test names them.
"""

from __future__ import annotations

# WCAG 2.1 relative luminance and contrast. The text colour is blended over the background
# with its own alpha and every ancestor's opacity; the background is the first opaque one up
# the tree, with the translucent layers above it blended in.
CONTRAST_JS = """
(arg) => {
  // ``minimum``, or ``[minimum, selector]`` to measure only what lies inside ``selector``.
  const [minimum, scope] = Array.isArray(arg) ? arg : [arg, null];
  const root = scope ? document.querySelector(scope) : document.body;
  const parse = (c) => {
    const m = c.match(/[\\d.]+/g);
    if (!m) return [0, 0, 0, 0];
    const v = m.map(Number);
    return [v[0], v[1], v[2], v.length > 3 ? v[3] : 1];
  };
  const over = (top, under) => {
    const a = top[3];
    return [0, 1, 2].map((i) => top[i] * a + under[i] * (1 - a)).concat([1]);
  };
  const lum = (c) => {
    const [r, g, b] = c.slice(0, 3).map((v) => {
      v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  const background = (el) => {
    const layers = [];
    for (let node = el; node; node = node.parentElement) {
      const c = parse(getComputedStyle(node).backgroundColor);
      if (c[3] > 0) layers.push(c);
      if (c[3] >= 1) break;
    }
    let bg = layers.length && layers[layers.length - 1][3] >= 1 ? layers.pop() : [255, 255, 255, 1];
    while (layers.length) bg = over(layers.pop(), bg);
    return bg;
  };
  const opacity = (el) => {
    let o = 1;
    for (let node = el; node; node = node.parentElement) o *= Number(getComputedStyle(node).opacity);
    return o;
  };
  const shown = (el) => {
    const s = getComputedStyle(el);
    if (s.visibility === 'hidden' || s.display === 'none') return false;
    const r = el.getBoundingClientRect();
    return r.width > 1 && r.height > 1 && el.checkVisibility({opacityProperty: true, visibilityProperty: true});
  };
  const ratio = (fg, bg) => {
    const [l1, l2] = [lum(fg), lum(bg)].sort((a, b) => b - a);
    return (l1 + 0.05) / (l2 + 0.05);
  };
  const name = (el) => (el.id ? '#' + el.id : el.tagName.toLowerCase())
    + (el.closest('[id]') && !el.id ? ' in #' + el.closest('[id]').id : '');
  const seen = new Map();
  const check = (el, text, color) => {
    const bg = background(el);
    let fg = parse(color);
    fg = over([fg[0], fg[1], fg[2], fg[3] * opacity(el)], bg);
    const r = ratio(fg, bg);
    const key = text + '|' + name(el);
    if (r < minimum && !seen.has(key)) {
      seen.set(key, {text: text.slice(0, 40), where: name(el), ratio: Math.round(r * 100) / 100,
                     color: color, background: 'rgb(' + bg.slice(0, 3).map(Math.round).join(', ') + ')'});
    }
    return r;
  };
  let checked = 0;
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const text = node.textContent.trim();
    const el = node.parentElement;
    if (!text || !el || ['SCRIPT', 'STYLE', 'NOSCRIPT'].includes(el.tagName) || !shown(el)) continue;
    check(el, text, getComputedStyle(el).color);
    checked += 1;
  }
  // Text a control shows that is no text node: typed values and placeholders.
  for (const el of root.querySelectorAll('input, textarea')) {
    if (!shown(el) || ['checkbox', 'radio', 'range', 'file', 'hidden'].includes(el.type)) continue;
    if (el.value) { check(el, el.value, getComputedStyle(el).color); checked += 1; }
    else if (el.placeholder) {
      check(el, el.placeholder, getComputedStyle(el, '::placeholder').color); checked += 1;
    }
  }
  const worst = [...seen.values()].sort((a, b) => a.ratio - b.ratio);
  return {checked, worst};
}
"""

# What a finger can press: buttons, links, form controls, tabs and anything else focusable.
# A control's hit area is its own box or, for a form control, the box of its label (a tap
# on the label works the control); the larger of each dimension counts.
TAP_TARGETS_JS = """
(arg) => {
  const [minimum, scope] = Array.isArray(arg) ? arg : [arg, null];
  const root = scope ? document.querySelector(scope) : document;
  const selector = 'button, a[href], input:not([type=hidden]), select, textarea, summary, '
    + '[role=button], [role=tab], [role=checkbox], [role=radio], [role=switch], [role=slider], '
    + '[role=combobox], [tabindex]:not([tabindex="-1"])';
  const shown = (el) => {
    const s = getComputedStyle(el);
    if (s.visibility === 'hidden' || s.display === 'none' || s.pointerEvents === 'none') return false;
    const r = el.getBoundingClientRect();
    return r.width > 0 && r.height > 0 && el.checkVisibility({opacityProperty: false, visibilityProperty: true});
  };
  const describe = (el) => {
    const text = (el.getAttribute('aria-label') || el.innerText || el.value || el.placeholder || '').trim();
    const holder = el.closest('[id]');
    return el.tagName.toLowerCase() + (el.type ? '[' + el.type + ']' : '') + ' ' + JSON.stringify(text.slice(0, 30))
      + (holder ? ' in #' + holder.id : '');
  };
  const small = [];
  let checked = 0;
  for (const el of root.querySelectorAll(selector)) {
    // A visually hidden control reached through its label (the mode pills' radios) is measured by the label.
    const r0 = el.getBoundingClientRect();
    if (!shown(el)) continue;
    const areas = [r0];
    for (const label of el.labels || []) areas.push(label.getBoundingClientRect());
    const own = el.closest('label');
    if (own) areas.push(own.getBoundingClientRect());
    const width = Math.max(...areas.map((r) => r.width));
    const height = Math.max(...areas.map((r) => r.height));
    checked += 1;
    if (width < minimum || height < minimum) {
      small.push({what: describe(el), width: Math.round(width), height: Math.round(height)});
    }
  }
  small.sort((a, b) => Math.min(a.width, a.height) - Math.min(b.width, b.height));
  return {checked, small};
}
"""

# Which theme the page shows: Gradio's dark variables apply under ``body.dark``.
IS_DARK_JS = "() => document.body.classList.contains('dark')"

# Every visible control a screen reader announces by name: its accessible name from aria-label,
# aria-labelledby, a <label>, its own text, an image's alt, or a title. Icon-only buttons
# (Gradio's play, download, copy, clear) have no text of their own and need one of the others.
NAMES_JS = """
(scope) => {
  const root = scope ? document.querySelector(scope) : document;
  const selector = 'button, a[href], input:not([type=hidden]), select, textarea, [role=button], [role=slider], '
    + '[role=checkbox], [role=switch], [role=tab], [role=combobox]';
  const text = (el) => (el ? (el.innerText || el.textContent || '').trim() : '');
  const name = (el) => {
    const by = (el.getAttribute('aria-labelledby') || '').split(/\\s+/).filter(Boolean)
      .map((id) => text(document.getElementById(id))).join(' ');
    // A name from content counts what is inside: an image's alt, a labelled icon or button.
    const images = [...el.querySelectorAll('img[alt], [aria-label]')]
      .map((i) => i.getAttribute('alt') || i.getAttribute('aria-label')).join(' ');
    const labels = [...(el.labels || [])].map(text).join(' ');
    const own = ['INPUT', 'TEXTAREA', 'SELECT'].includes(el.tagName) ? '' : text(el);
    return [el.getAttribute('aria-label'), by, labels, own,
            images, el.getAttribute('title'), el.tagName === 'INPUT' && el.type === 'button' ? el.value : '',
            el.getAttribute('placeholder')].filter((v) => v && v.trim()).join(' ').trim();
  };
  const shown = (el) => {
    const s = getComputedStyle(el);
    if (s.visibility === 'hidden' || s.display === 'none') return false;
    const r = el.getBoundingClientRect();
    return r.width > 0 && r.height > 0 && el.checkVisibility({visibilityProperty: true});
  };
  const unnamed = [];
  let checked = 0;
  for (const el of root.querySelectorAll(selector)) {
    if (!shown(el) || el.closest('[aria-hidden=true]')) continue;
    checked += 1;
    if (!name(el)) {
      const holder = el.closest('[id]');
      unnamed.push(el.tagName.toLowerCase() + (el.type ? '[' + el.type + ']' : '') + ' .' + el.className
        + (holder ? ' in #' + holder.id : ''));
    }
  }
  return {checked, unnamed};
}
"""
