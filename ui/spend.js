// Spend (master key): daily spend and requests over the last 30 days by key, model or team,
// with totals. Logs (any key; a virtual key sees only its own): the spend log rows, filterable.

import { api, isMissingRoute } from './api.js';
import { h, clear, table, notice, usd, num, when, shortHash, day } from './dom.js';
import { DAYS, lastDays, factsFromLogs, factsFromReport, rollup, barChart } from './charts.js';

const MAX_LOG_ROWS = 1000;
const DIMENSIONS = [
  { id: 'key', label: 'Key' },
  { id: 'model', label: 'Model' },
  { id: 'team', label: 'Team' },
];

/** Alias by key hash, for naming keys in the report (which knows only hashes). */
async function keyLabels() {
  const labels = new Map();
  for (let page = 1; page <= 10; page++) {
    const answer = await api('/key/list', { query: { page, size: 100 } });
    for (const k of answer.keys || []) if (k.key_alias) labels.set(k.token, k.key_alias);
    if (page >= (answer.total_pages || 1)) break;
  }
  return labels;
}

/**
 * The last 30 days as facts. From `/global/spend/report` (LiteLLM's daily report) when the
 * gateway serves it, else from the spend logs; request counts the report lacks come from the
 * logs too. Returns the facts for spend and for requests, and where each came from.
 */
async function spendFacts(days) {
  const range = { start_date: days[0], end_date: days[days.length - 1] };
  let report;
  try {
    report = await api('/global/spend/report', { query: { ...range, group_by: 'team' } });
  } catch (e) {
    if (!isMissingRoute(e)) throw e;
  }
  const logs = async () => factsFromLogs(await api('/spend/logs', { query: { start_date: range.start_date, limit: MAX_LOG_ROWS } }));
  if (!report) {
    const facts = await logs();
    return { spend: facts, requests: facts, source: `the spend logs (the latest ${MAX_LOG_ROWS} requests)` };
  }
  const facts = factsFromReport(report, await keyLabels());
  if (facts.every((f) => f.requests !== null)) return { spend: facts, requests: facts, source: '/global/spend/report' };
  return { spend: facts, requests: await logs(), source: `/global/spend/report; requests counted from the spend logs (the latest ${MAX_LOG_ROWS})` };
}

export async function spendPage(section, ctx) {
  const days = lastDays(DAYS);
  const body = h('div', {}, h('p', { class: 'loading' }, 'Loading spend…'));
  section.append(body);
  const facts = await spendFacts(days);
  if (ctx.stale()) return;
  let dimension = 'key';
  const view = h('div', {});
  const draw = () => {
    const spend = rollup(facts.spend, dimension, days);
    const requests = rollup(facts.requests, dimension, days);
    const byName = new Map(requests.groups.map((g) => [g.name, g.total.requests]));
    clear(
      view,
      h('div', { class: 'totals' },
        h('div', { class: 'stat' }, h('span', {}, 'Spend, 30 days'), h('strong', { 'data-testid': 'total-spend' }, usd(spend.total.spend))),
        h('div', { class: 'stat' }, h('span', {}, 'Requests'), h('strong', { 'data-testid': 'total-requests' }, num(requests.total.requests))),
        h('div', { class: 'stat' }, h('span', {}, 'Tokens'), h('strong', {}, num(spend.total.tokens)))),
      h('div', { class: 'charts' },
        barChart(spend, 'spend', { title: 'Daily spend', testid: 'spend-chart' }),
        barChart(requests, 'requests', { title: 'Daily requests', testid: 'requests-chart' })),
      table(
        [
          { label: DIMENSIONS.find((d) => d.id === dimension).label, value: (g) => String(g.name) },
          { label: 'Spend', value: (g) => usd(g.total.spend), className: 'num' },
          { label: 'Requests', value: (g) => num(byName.get(g.name) ?? 0), className: 'num' },
          { label: 'Tokens', value: (g) => num(g.total.tokens), className: 'num' },
        ],
        spend.groups,
        { empty: 'No spend in the last 30 days.', testid: 'spend-totals' },
      ),
    );
  };
  const tabs = h('div', { class: 'tabs', role: 'tablist' },
    DIMENSIONS.map((d) => h('button', {
      type: 'button', role: 'tab', 'aria-selected': String(d.id === dimension), 'data-dimension': d.id,
      onclick: (e) => {
        dimension = d.id;
        for (const b of tabs.children) b.setAttribute('aria-selected', String(b === e.currentTarget));
        draw();
      },
    }, `By ${d.label.toLowerCase()}`)));
  draw();
  clear(body, tabs, view, h('p', { class: 'hint' }, `${days[0]} to ${days[days.length - 1]} (UTC), from ${facts.source}.`));
}

/** The spend log table with its filters; `role` decides whether a key can be chosen. */
export async function logsPage(section, ctx) {
  const master = ctx.role === 'master';
  const since = day(Date.now() - (DAYS - 1) * 86_400_000);
  const apiKey = master ? h('input', { type: 'search', name: 'api_key', placeholder: 'Key or its hash', 'aria-label': 'Key' }) : null;
  const requestId = h('input', { type: 'search', name: 'request_id', placeholder: 'Request or call id', 'aria-label': 'Request id' });
  const start = h('input', { type: 'date', name: 'start_date', value: since });
  const end = h('input', { type: 'date', name: 'end_date' });
  const model = h('select', { name: 'model', 'aria-label': 'Model' });
  const status = h('select', { name: 'status', 'aria-label': 'Status' }, h('option', { value: '' }, 'Any status'), h('option', { value: 'success' }, 'Success'), h('option', { value: 'failure' }, 'Failure'));
  const text = h('input', { type: 'search', name: 'text', placeholder: 'Filter rows…', 'aria-label': 'Filter rows' });
  const box = h('div', {}, h('p', { class: 'loading' }, 'Loading logs…'));
  let rows = [];

  const render = () => {
    const m = model.value, st = status.value, t = text.value.trim().toLowerCase();
    const shownRows = rows.filter((r) =>
      (!m || r.model_group === m) && (!st || r.status === st) &&
      (!t || [r.key_alias, r.api_key, r.model_group, r.model_id, r.request_id, r.call_id, r.team_id, r.end_user, ...(r.request_tags || [])].some((v) => v && String(v).toLowerCase().includes(t))));
    clear(box, h('p', { class: 'hint' }, `${shownRows.length} of ${rows.length} requests`), logTable(shownRows));
  };
  const load = async (event) => {
    event?.preventDefault();
    try {
      rows = await api('/spend/logs', { query: { api_key: apiKey?.value.trim(), request_id: requestId.value.trim(), start_date: start.value, end_date: end.value, limit: MAX_LOG_ROWS } });
    } catch (e) {
      clear(box, notice('error', e.message));
      return;
    }
    if (ctx.stale()) return;
    const models = [...new Set(rows.map((r) => r.model_group).filter(Boolean))].sort();
    const chosen = model.value;
    clear(model, h('option', { value: '' }, 'Any model'), models.map((x) => h('option', { value: x }, x)));
    model.value = models.includes(chosen) ? chosen : '';
    render();
  };
  for (const el of [model, status]) el.addEventListener('change', render);
  text.addEventListener('input', render);
  section.append(
    h('form', { class: 'filters', onsubmit: load, role: 'search' }, apiKey, requestId,
      h('label', { class: 'inline' }, 'From ', start), h('label', { class: 'inline' }, 'to ', end),
      h('button', { type: 'submit' }, 'Load'), model, status, text),
    box,
  );
  await load();
}

export function logTable(rows) {
  return table(
    [
      { label: 'Time', value: (r) => when(r.startTime) },
      { label: 'Key', value: (r) => r.key_alias || (r.api_key ? h('code', { title: r.api_key }, shortHash(r.api_key)) : 'master key') },
      { label: 'Model', value: (r) => r.model_group || '—' },
      { label: 'Deployment', value: (r) => r.model_id || '—' },
      { label: 'Status', value: (r) => h('span', { class: `badge ${r.status === 'success' ? 'ok' : 'bad'}` }, String(r.status_code ?? r.status)) },
      { label: 'Tokens in/out', value: (r) => `${num(r.prompt_tokens)} / ${num(r.completion_tokens)}`, className: 'num' },
      { label: 'Spend', value: (r) => usd(r.spend) + (r.estimated ? ' (est.)' : ''), className: 'num' },
      { label: 'Stream', value: (r) => (r.stream ? 'yes' : 'no') },
      { label: 'Team', value: (r) => r.team_id || '—' },
      { label: 'End user', value: (r) => r.end_user || '—' },
      { label: 'Tags', value: (r) => (r.request_tags && r.request_tags.length ? r.request_tags.join(', ') : '—') },
      { label: 'Request id', value: (r) => h('code', {}, r.request_id || r.call_id || '—') },
    ],
    rows,
    { empty: 'No requests match.', testid: 'logs', rowAttrs: (r) => ({ 'data-request-id': r.request_id || '', 'data-call-id': r.call_id || '' }) },
  );
}
