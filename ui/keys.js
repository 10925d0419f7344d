// Keys (master key): the list with search and paging (`/key/list`), and create, edit, block,
// unblock, regenerate and delete. A new or regenerated secret is shown once, with a copy button.

import { api } from './api.js';
import { h, clear, table, notice, usd, num, when, shortHash, confirmAction } from './dom.js';

/**
 * Every field `/key/generate` and `/key/update` take, as the form shows it. `kind`: text,
 * number (USD or a count), list (comma separated), json (an object), bool.
 */
const FIELDS = [
  { name: 'key_alias', label: 'Alias', kind: 'text', hint: 'A unique name for the key' },
  { name: 'key', label: 'Secret', kind: 'text', createOnly: true, hint: 'Leave empty for a random sk-… secret' },
  { name: 'duration', label: 'Expires after', kind: 'text', hint: '30s, 30m, 30h, 30d; empty: never', createOnly: true },
  { name: 'expires', label: 'Expires at', kind: 'text', hint: 'RFC 3339, e.g. 2027-01-31T00:00:00Z', editOnly: true },
  { name: 'models', label: 'Models', kind: 'list', hint: 'Comma separated; empty: every model' },
  { name: 'max_budget', label: 'Max budget (USD)', kind: 'number' },
  { name: 'soft_budget', label: 'Soft budget (USD)', kind: 'number', hint: 'Reported only' },
  { name: 'budget_duration', label: 'Budget resets every', kind: 'text', hint: '1d, 30d, …' },
  { name: 'rpm_limit', label: 'Requests per minute', kind: 'number' },
  { name: 'tpm_limit', label: 'Tokens per minute', kind: 'number' },
  { name: 'max_parallel_requests', label: 'Parallel requests', kind: 'number' },
  { name: 'team_id', label: 'Team id', kind: 'text' },
  { name: 'user_id', label: 'User id', kind: 'text' },
  { name: 'tags', label: 'Tags', kind: 'list' },
  { name: 'aliases', label: 'Model aliases', kind: 'json', hint: '{"alias": "model name"}' },
  { name: 'model_rpm_limit', label: 'Per-model RPM', kind: 'json', hint: '{"model": 10}' },
  { name: 'model_tpm_limit', label: 'Per-model TPM', kind: 'json', hint: '{"model": 10000}' },
  { name: 'model_max_budget', label: 'Per-model budgets', kind: 'json', hint: '{"model": {"budget_limit": 0.05, "time_period": "1d"}}' },
  { name: 'metadata', label: 'Metadata', kind: 'json', hint: '{"owner": "…"}' },
  { name: 'blocked', label: 'Blocked', kind: 'bool' },
];

const PAGE_SIZES = [10, 25, 50, 100];

export async function keysPage(section, ctx) {
  const state = { page: 1, size: 10, key_alias: '', team_id: '', user_id: '' };
  const secret = h('div', { class: 'secret-slot' });
  const listBox = h('div', {}, h('p', { class: 'loading' }, 'Loading keys…'));
  const search = h('input', { type: 'search', name: 'key_alias', placeholder: 'Alias (exact)', 'aria-label': 'Search by alias' });
  const team = h('input', { type: 'search', name: 'team_id', placeholder: 'Team id', 'aria-label': 'Team id' });
  const user = h('input', { type: 'search', name: 'user_id', placeholder: 'User id', 'aria-label': 'User id' });
  const size = h('select', { 'aria-label': 'Keys per page', onchange: () => { state.size = Number(size.value); state.page = 1; load(); } }, PAGE_SIZES.map((n) => h('option', { value: n }, `${n} per page`)));

  const load = async () => {
    let answer;
    try {
      answer = await api('/key/list', { query: { page: state.page, size: state.size, key_alias: state.key_alias, team_id: state.team_id, user_id: state.user_id, return_full_object: 'true' } });
    } catch (e) {
      clear(listBox, notice('error', e.message));
      return;
    }
    if (ctx.stale()) return;
    clear(listBox, keyTable(answer.keys || [], act), pager(answer, (page) => { state.page = page; load(); }));
  };

  const showSecret = (title, answer) => {
    const value = h('code', { 'data-testid': 'secret' }, answer.key);
    const copied = h('span', { class: 'copied', role: 'status' });
    clear(
      secret,
      h(
        'div',
        { class: 'notice success secret' },
        h('strong', {}, title),
        h('p', {}, 'Copy the secret now: it is shown only this once, and the gateway keeps only its hash.'),
        h('div', { class: 'secret-row' }, value,
          h('button', { type: 'button', onclick: async () => {
            try {
              await navigator.clipboard.writeText(answer.key);
              copied.textContent = 'Copied.';
            } catch {
              getSelection().selectAllChildren(value);
              copied.textContent = 'Select and copy it (the browser refused the clipboard).';
            }
          } }, 'Copy'),
          h('button', { type: 'button', class: 'link', onclick: () => clear(secret) }, 'Done'),
          copied),
      ),
    );
  };

  /** Runs an action on a key and reports its error or success. */
  async function act(kind, key) {
    const name = key.key_alias || shortHash(key.token);
    try {
      if (kind === 'edit') {
        if (!(await keyForm('Edit key', key, (body) => api('/key/update', { body: { key: key.token, ...body } })))) return;
      } else if (kind === 'block' || kind === 'unblock') {
        await api(`/key/${kind}`, { body: { key: key.token } });
      } else if (kind === 'regenerate') {
        if (!(await confirmAction('Regenerate key', `A new secret for ${name}; the current one stops working at once. Its settings and spend stay.`, 'Regenerate'))) return;
        showSecret(`New secret for ${name}`, await api('/key/regenerate', { body: { key: key.token } }));
      } else if (kind === 'delete') {
        if (!(await confirmAction('Delete key', `Delete ${name}? Requests with it are refused from now on. This cannot be undone.`, 'Delete'))) return;
        await api('/key/delete', { body: { keys: [key.token] } });
      }
    } catch (e) {
      clear(secret, notice('error', `Cannot ${kind} ${name}: ${e.message}`));
      return;
    }
    load();
  }

  const create = async () => {
    const created = await keyForm('Create key', null, (body) => api('/key/generate', { body }));
    if (!created) return;
    showSecret(created.key_alias ? `Key ${created.key_alias} created` : 'Key created', created);
    load();
  };

  const applySearch = (event) => {
    event.preventDefault();
    Object.assign(state, { page: 1, key_alias: search.value.trim(), team_id: team.value.trim(), user_id: user.value.trim() });
    load();
  };

  section.append(
    h('div', { class: 'toolbar' },
      h('form', { class: 'filters', onsubmit: applySearch, role: 'search' }, search, team, user, h('button', { type: 'submit' }, 'Search')),
      size,
      h('button', { type: 'button', class: 'primary', onclick: create, 'data-testid': 'create-key' }, 'Create key')),
    secret,
    listBox,
  );
  await load();
}

function keyTable(keys, act) {
  const status = (k) => {
    if (k.blocked) return h('span', { class: 'badge bad' }, 'blocked');
    if (k.expires && Date.parse(k.expires) < Date.now()) return h('span', { class: 'badge bad' }, 'expired');
    return h('span', { class: 'badge ok' }, 'active');
  };
  const limits = (k) =>
    [k.rpm_limit && `${num(k.rpm_limit)} rpm`, k.tpm_limit && `${num(k.tpm_limit)} tpm`, k.max_parallel_requests && `${k.max_parallel_requests} parallel`]
      .filter(Boolean)
      .join(', ') || '—';
  const button = (label, kind, k, cls = '') => h('button', { type: 'button', class: `small ${cls}`, onclick: () => act(kind, k) }, label);
  return table(
    [
      { label: 'Alias', value: (k) => k.key_alias || h('span', { class: 'muted' }, '(none)') },
      { label: 'Key', value: (k) => h('code', { title: k.token }, k.key_name || shortHash(k.token)) },
      { label: 'Status', value: status },
      { label: 'Spend', value: (k) => `${usd(k.spend)}${k.max_budget !== null && k.max_budget !== undefined ? ` of ${usd(k.max_budget)}` : ''}`, className: 'num' },
      { label: 'Limits', value: limits },
      { label: 'Models', value: (k) => (k.models && k.models.length ? k.models.join(', ') : 'all') },
      { label: 'Team', value: (k) => k.team_id || '—' },
      { label: 'User', value: (k) => k.user_id || '—' },
      { label: 'Expires', value: (k) => when(k.expires) },
      { label: 'Created', value: (k) => when(k.created_at) },
      {
        label: 'Actions',
        className: 'row-actions',
        value: (k) => h('div', { class: 'row-buttons' },
          button('Edit', 'edit', k),
          k.blocked ? button('Unblock', 'unblock', k) : button('Block', 'block', k),
          button('Regenerate', 'regenerate', k),
          button('Delete', 'delete', k, 'danger')),
      },
    ],
    keys,
    { empty: 'No keys match.', testid: 'keys', rowAttrs: (k) => ({ 'data-alias': k.key_alias || '', 'data-token': k.token }) },
  );
}

function pager(answer, go) {
  const page = answer.current_page || 1;
  const pages = answer.total_pages || 1;
  return h('nav', { class: 'pager', 'aria-label': 'Pages of keys' },
    h('button', { type: 'button', disabled: page <= 1, onclick: () => go(page - 1) }, '‹ Previous'),
    h('span', {}, `Page ${page} of ${Math.max(pages, 1)} · ${num(answer.total_count || 0)} keys`),
    h('button', { type: 'button', disabled: page >= pages, onclick: () => go(page + 1) }, 'Next ›'));
}

/** The value a field shows for an existing key. */
function shown(field, key) {
  const v = key && key[field.name];
  if (v === undefined || v === null) return '';
  if (field.kind === 'list') return v.join(', ');
  if (field.kind === 'json') return Object.keys(v).length ? JSON.stringify(v) : '';
  return String(v);
}

/**
 * The create or edit form in a dialog. Its body (only the fields given; on edit only the ones
 * changed, an emptied field sent as null to clear it) goes to `send`; the dialog stays open
 * with the API's error until `send` succeeds, and resolves to its answer (null if cancelled).
 */
function keyForm(title, key, send) {
  const editing = Boolean(key);
  const fields = FIELDS.filter((f) => !(editing ? f.createOnly : f.editOnly));
  const inputs = new Map();
  const error = h('div', { class: 'form-error' });
  const rows = fields.map((f) => {
    const id = `field-${f.name}`;
    let input;
    if (f.kind === 'bool') input = h('input', { type: 'checkbox', id, name: f.name, checked: Boolean(key && key[f.name]) });
    else if (f.kind === 'json') input = h('textarea', { id, name: f.name, rows: 2, placeholder: f.hint, spellcheck: 'false' }, shown(f, key));
    else input = h('input', { id, name: f.name, type: f.kind === 'number' ? 'number' : 'text', step: 'any', min: f.kind === 'number' ? '0' : null, value: shown(f, key), placeholder: f.hint || '', autocomplete: 'off', spellcheck: 'false' });
    inputs.set(f.name, input);
    return h('div', { class: `field ${f.kind}` }, h('label', { for: id }, f.label), input);
  });

  const collect = () => {
    const body = {};
    for (const f of fields) {
      const input = inputs.get(f.name);
      if (f.kind === 'bool') {
        if (input.checked !== Boolean(key && key[f.name])) body[f.name] = input.checked;
        continue;
      }
      const raw = input.value.trim();
      if (editing && raw === shown(f, key)) continue;
      if (raw === '') {
        if (editing) body[f.name] = f.kind === 'list' ? [] : f.kind === 'json' ? {} : null;
        continue;
      }
      if (f.kind === 'number') {
        const n = Number(raw);
        if (!Number.isFinite(n) || n < 0) throw new Error(`${f.label}: a number of 0 or more`);
        body[f.name] = n;
      } else if (f.kind === 'list') body[f.name] = raw.split(',').map((x) => x.trim()).filter(Boolean);
      else if (f.kind === 'json') {
        let v;
        try {
          v = JSON.parse(raw);
        } catch {
          throw new Error(`${f.label}: not valid JSON (${f.hint})`);
        }
        if (!v || typeof v !== 'object' || Array.isArray(v)) throw new Error(`${f.label}: must be a JSON object`);
        body[f.name] = v;
      } else body[f.name] = raw;
    }
    return body;
  };

  return new Promise((resolve) => {
    const d = h('dialog', { class: 'modal wide', 'data-testid': 'key-form' },
      h('h2', {}, title),
      h('form', { onsubmit: async (e) => {
        e.preventDefault();
        try {
          const answer = await send(collect());
          resolve(answer);
          d.close();
        } catch (err) {
          clear(error, notice('error', err.message));
        }
      } },
        h('div', { class: 'grid' }, rows),
        error,
        h('div', { class: 'dialog-actions' },
          h('button', { type: 'button', onclick: () => { resolve(null); d.close(); } }, 'Cancel'),
          h('button', { type: 'submit', class: 'primary' }, editing ? 'Save' : 'Create'))));
    d.addEventListener('close', () => { resolve(null); d.remove(); });
    document.body.append(d);
    d.showModal();
    inputs.get('key_alias').focus();
  });
}

