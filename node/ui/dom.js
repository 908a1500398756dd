// Small DOM and formatting helpers. Text from the node (device names, reasons) only ever
// reaches the page as text nodes or attribute values, never as markup, so a device that
// names itself "<img onerror=...>" is shown, not run.

/**
 * Creates an element. `props`: `class`, `dataset` (object), `on<event>` (listener),
 * booleans (`disabled`, `checked`, `hidden`...) as properties, anything else as an
 * attribute. Children: nodes, strings (as text), arrays, or null/false (skipped).
 */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props ?? {})) {
    if (v == null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (typeof v === 'boolean' && k in el) el[k] = v;
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c == null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
}

/** Replaces the children of `el`. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
}

/** A device id short enough to read: the start and the end. */
export function shortId(id) {
  if (typeof id !== 'string') return '?';
  return id.length > 18 ? `${id.slice(0, 8)}…${id.slice(-6)}` : id;
}

/** A 6-digit code as two groups of three, easier to compare aloud. */
export function groupCode(code) {
  return typeof code === 'string' && code.length === 6 ? `${code.slice(0, 3)} ${code.slice(3)}` : String(code ?? '');
}

/** Milliseconds since the epoch, as local date and time. */
export function fmtTime(ms) {
  if (typeof ms !== 'number') return '—';
  return new Date(ms).toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'medium' });
}

/** Time left until `deadline` (ms since the epoch), in words. */
export function fmtLeft(deadline, now = Date.now()) {
  const s = Math.max(0, Math.round((deadline - now) / 1000));
  if (s >= 7200) return `${Math.floor(s / 3600)} h left`;
  if (s >= 120) return `${Math.floor(s / 60)} min left`;
  if (s >= 60) return `1 min ${s - 60} s left`;
  return `${s} s left`;
}
