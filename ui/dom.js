// Small helpers for building the page: elements, tables, formats, dialogs. Text is always set
// as text (never as HTML), so nothing the API returns can inject markup.

/** `h('a', {href: '#'}, 'text', child)`: attributes starting with `on` are listeners. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElementNS(
    tag === 'svg' || attrs.svg ? 'http://www.w3.org/2000/svg' : 'http://www.w3.org/1999/xhtml',
    tag,
  );
  for (const [name, value] of Object.entries(attrs)) {
    if (name === 'svg' || value === undefined || value === null || value === false) continue;
    if (name.startsWith('on')) el.addEventListener(name.slice(2), value);
    else if (name === 'dataset') Object.assign(el.dataset, value);
    // Through the CSSOM: the page's CSP refuses `style` attributes.
    else if (name === 'style') el.style.cssText = value;
    else if (name === 'value' && 'value' in el) el.value = value;
    else if (name === 'checked') el.checked = Boolean(value);
    else el.setAttribute(name, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

/** An SVG element. */
export const s = (tag, attrs = {}, ...children) => h(tag, { ...attrs, svg: true }, ...children);

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export const usd = (v) => {
  if (v === null || v === undefined) return '—';
  const n = Number(v);
  if (n === 0) return '$0';
  return Math.abs(n) < 0.01 ? `$${n.toPrecision(3)}` : `$${n.toFixed(2)}`;
};
export const num = (v) => (v === null || v === undefined ? '—' : Number(v).toLocaleString('en-US'));
export const when = (iso) => (iso ? iso.replace('T', ' ').replace(/\.\d+/, '').replace(/(Z|\+00:00)$/, ' UTC') : '—');
export const shortHash = (hash) => (hash ? `${hash.slice(0, 10)}…` : '—');
/** `YYYY-MM-DD` of a date, in UTC (the gateway's days are UTC days). */
export const day = (d) => new Date(d).toISOString().slice(0, 10);

/**
 * A table in a horizontally scrolling box (narrow screens). `columns`: [{label, value(row),
 * className?}]; a value may be a Node. `rowAttrs(row)` adds attributes to each row.
 */
export function table(columns, rows, { empty = 'Nothing to show.', rowAttrs, testid } = {}) {
  if (!rows.length) return h('p', { class: 'empty', 'data-testid': testid && `${testid}-empty` }, empty);
  return h(
    'div',
    { class: 'table-scroll' },
    h(
      'table',
      { 'data-testid': testid },
      h('thead', {}, h('tr', {}, columns.map((c) => h('th', { scope: 'col', class: c.className }, c.label)))),
      h(
        'tbody',
        {},
        rows.map((row) =>
          h('tr', rowAttrs ? rowAttrs(row) : {}, columns.map((c) => h('td', { class: c.className, 'data-label': c.label }, c.value(row)))),
        ),
      ),
    ),
  );
}

/** A banner under the page title: `kind` is `error` or `info`. */
export function notice(kind, message) {
  return h('div', { class: `notice ${kind}`, role: kind === 'error' ? 'alert' : 'status' }, message);
}

/** A modal dialog that resolves to the clicked button's value (or null when dismissed). */
export function dialog(title, body, buttons = [{ label: 'OK', value: true, primary: true }]) {
  return new Promise((resolve) => {
    // Buttons close the dialog themselves (no `method="dialog"` form: the page's CSP allows
    // no form submission at all).
    const d = h(
      'dialog',
      { class: 'modal' },
      h('h2', {}, title),
      body,
      h(
        'div',
        { class: 'dialog-actions' },
        buttons.map((b) =>
          h(
            'button',
            {
              type: 'button',
              class: b.primary ? 'primary' : b.danger ? 'danger' : '',
              onclick: () => d.close(String(b.value)),
            },
            b.label,
          ),
        ),
      ),
    );
    d.addEventListener('close', () => {
      d.remove();
      const hit = buttons.find((b) => String(b.value) === d.returnValue);
      resolve(hit ? hit.value : null);
    });
    document.body.append(d);
    d.showModal();
  });
}

/** Asks before something that cannot be undone. */
export function confirmAction(title, message, label, danger = true) {
  return dialog(title, h('p', {}, message), [
    { label: 'Cancel', value: false },
    { label, value: true, danger, primary: !danger },
  ]).then((v) => v === true);
}
