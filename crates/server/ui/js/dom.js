// Tiny DOM builder. Text is always inserted as text nodes (never innerHTML), so values
// from the API (labels, summaries) cannot inject markup.

/** h('a', {href: '#/', class: 'x', onclick: fn}, 'text', child, [more]) → Element */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c == null || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
}

/** Replaces every child of `el` with `children`. */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A small note in place of a section whose data could not be loaded. */
export function note(text, cls = 'muted') {
  return h('p', { class: cls }, text);
}
