// A virtual key's own usage: its settings and spend (`/key/info` on itself), its daily spend and
// requests, and its requests (`/spend/logs`, which answers a key with its own rows only).

import { api } from './api.js';
import { h, table, usd, num, when } from './dom.js';
import { DAYS, lastDays, factsFromLogs, rollup, barChart } from './charts.js';
import { logTable } from './spend.js';

export async function usagePage(section, ctx) {
  const days = lastDays(DAYS);
  const [info, rows] = await Promise.all([api('/key/info'), api('/spend/logs', { query: { start_date: days[0], limit: 1000 } })]);
  if (ctx.stale()) return;
  const k = info.info || {};
  const facts = factsFromLogs(rows);
  const rolled = rollup(facts, 'model', days);
  const fields = [
    ['Alias', k.key_alias || '—'],
    ['Key', h('code', { title: k.token }, k.key_name || k.token)],
    ['Spend', `${usd(k.spend)}${k.max_budget !== null && k.max_budget !== undefined ? ` of ${usd(k.max_budget)}` : ''}`],
    ['Budget resets', k.budget_duration ? `every ${k.budget_duration}, next ${when(k.budget_reset_at)}` : '—'],
    ['Limits', [k.rpm_limit && `${num(k.rpm_limit)} rpm`, k.tpm_limit && `${num(k.tpm_limit)} tpm`, k.max_parallel_requests && `${k.max_parallel_requests} parallel`].filter(Boolean).join(', ') || 'none'],
    ['Models', k.models && k.models.length ? k.models.join(', ') : 'all'],
    ['Expires', when(k.expires)],
    ['State', k.blocked ? 'blocked' : 'active'],
  ];
  section.append(
    h('dl', { class: 'facts', 'data-testid': 'key-info', 'data-alias': k.key_alias || '' }, fields.map(([label, value]) => [h('dt', {}, label), h('dd', {}, value)])),
    h('div', { class: 'charts' },
      barChart(rolled, 'spend', { title: 'Daily spend', testid: 'spend-chart' }),
      barChart(rolled, 'requests', { title: 'Daily requests', testid: 'requests-chart' })),
    table(
      [
        { label: 'Model', value: (g) => String(g.name) },
        { label: 'Spend', value: (g) => usd(g.total.spend), className: 'num' },
        { label: 'Requests', value: (g) => num(g.total.requests), className: 'num' },
        { label: 'Tokens', value: (g) => num(g.total.tokens), className: 'num' },
      ],
      rolled.groups,
      { empty: 'No requests in the last 30 days.', testid: 'usage-totals' },
    ),
    h('h2', {}, 'Requests'),
    logTable(rows),
  );
}
