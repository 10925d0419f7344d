// Daily spend and requests: facts from either source (LiteLLM's `/global/spend/report` or the
// spend log rows), rolled up by one dimension, drawn as stacked bars in hand-written SVG.
// Every bar and day carries its numbers in data attributes and a <title> (hover, tests).

import { h, s, usd, num, day, shortHash } from './dom.js';

export const DAYS = 30;
const TOP = 5;
const COLORS = ['#2563eb', '#d97706', '#059669', '#db2777', '#7c3aed', '#94a3b8'];

/** The last `n` UTC days, oldest first, ending today. */
export function lastDays(n = DAYS, now = Date.now()) {
  return Array.from({ length: n }, (_, i) => day(now - (n - 1 - i) * 86_400_000));
}

/** One fact per spend log row (one request each). */
export function factsFromLogs(rows) {
  return rows.map((r) => ({
    day: (r.startTime || '').slice(0, 10),
    key: r.key_alias || (r.api_key ? shortHash(r.api_key) : 'master key'),
    model: r.model_group || '—',
    team: r.team_id || 'Unassigned Team',
    spend: Number(r.spend) || 0,
    requests: 1,
    tokens: Number(r.total_tokens) || 0,
  }));
}

/**
 * Facts from `/global/spend/report?group_by=team` (LiteLLM's shape: per day, per team, the
 * spend per model and key). LiteLLM's rows have no request count; where the gateway adds one
 * (`api_requests`, `requests` or `log_count` on a metadata entry) it is used, else `null`.
 */
export function factsFromReport(report, keyLabels = new Map()) {
  const facts = [];
  for (const row of Array.isArray(report) ? report : []) {
    const d = String(row.group_by_day || '').slice(0, 10);
    for (const team of row.teams || []) {
      for (const m of team.metadata || []) {
        const requests = m.api_requests ?? m.requests ?? m.log_count;
        facts.push({
          day: d,
          key: keyLabels.get(m.api_key) || (m.api_key ? shortHash(m.api_key) : 'master key'),
          model: m.model || '—',
          team: team.team_name || team.team_id || 'Unassigned Team',
          spend: Number(m.spend) || 0,
          requests: requests === undefined || requests === null ? null : Number(requests),
          tokens: Number(m.total_tokens) || 0,
        });
      }
    }
  }
  return facts;
}

/**
 * Groups facts by `dimension` (`key`, `model` or `team`) over `days`: each group's daily spend,
 * requests and tokens, largest spend first, and the totals.
 */
export function rollup(facts, dimension, days) {
  const index = new Map(days.map((d, i) => [d, i]));
  const groups = new Map();
  const total = { spend: 0, requests: 0, tokens: 0, requestsKnown: true };
  for (const f of facts) {
    const i = index.get(f.day);
    if (i === undefined) continue;
    const name = f[dimension];
    if (!groups.has(name)) {
      groups.set(name, { name, spend: zeros(days), requests: zeros(days), tokens: zeros(days), total: { spend: 0, requests: 0, tokens: 0 } });
    }
    const g = groups.get(name);
    g.spend[i] += f.spend;
    g.tokens[i] += f.tokens;
    g.total.spend += f.spend;
    g.total.tokens += f.tokens;
    total.spend += f.spend;
    total.tokens += f.tokens;
    if (f.requests === null) total.requestsKnown = false;
    else {
      g.requests[i] += f.requests;
      g.total.requests += f.requests;
      total.requests += f.requests;
    }
  }
  const list = [...groups.values()].sort((a, b) => b.total.spend - a.total.spend || b.total.requests - a.total.requests || String(a.name).localeCompare(String(b.name)));
  return { days, groups: list, total };
}

const zeros = (days) => days.map(() => 0);

/** The top groups, the rest summed as "other", so a chart stays readable. */
function topGroups(groups, metric) {
  const sorted = [...groups].sort((a, b) => b.total[metric] - a.total[metric]);
  if (sorted.length <= TOP + 1) return sorted;
  const rest = sorted.slice(TOP);
  const other = { name: `${rest.length} others`, [metric]: rest[0][metric].map((_, i) => rest.reduce((n, g) => n + g[metric][i], 0)) };
  return [...sorted.slice(0, TOP), other];
}

/**
 * A stacked bar chart of `metric` (`spend` or `requests`) per day. The <svg> carries the
 * metric's total (`data-total`), each day column its value (`data-day`, `data-value`).
 */
export function barChart(rolled, metric, { title, testid }) {
  const { days, groups } = rolled;
  const shown = topGroups(groups, metric);
  const perDay = days.map((_, i) => shown.reduce((n, g) => n + g[metric][i], 0));
  const max = Math.max(...perDay, metric === 'spend' ? 0.000001 : 1);
  const fmt = metric === 'spend' ? usd : num;
  // Axis labels short enough for the margin: two significant digits.
  const axis = (v) => (metric === 'spend' ? (v === 0 ? '$0' : `$${Number(v.toPrecision(2))}`) : num(Math.round(v * 10) / 10));
  // The margin fits the longest axis label at the largest font the stylesheet uses (14 px on
  // a phone, where the chart is drawn at about half its size).
  const left = 12 + Math.max(...[0, 0.5, 1].map((f) => axis(max * f).length)) * 8.5;
  const W = 600, H = 180, right = 8, bottom = 22, top = 8;
  const plotH = H - bottom - top;
  const slot = (W - left - right) / days.length;
  const barW = Math.max(2, slot * 0.7);
  const total = perDay.reduce((a, b) => a + b, 0);

  const columns = days.map((d, i) => {
    let y = top + plotH;
    const x = left + i * slot + (slot - barW) / 2;
    const segments = shown.map((g, gi) => {
      const v = g[metric][i];
      if (!v) return null;
      const hgt = (v / max) * plotH;
      y -= hgt;
      return s('rect', { x: x.toFixed(1), y: y.toFixed(1), width: barW.toFixed(1), height: Math.max(hgt, 0.5).toFixed(1), fill: COLORS[gi % COLORS.length], 'data-group': g.name, 'data-value': v }, s('title', {}, `${d} · ${g.name}: ${fmt(v)}`));
    });
    return s(
      'g',
      { class: 'day', 'data-day': d, 'data-value': perDay[i] },
      s('rect', { x: (left + i * slot).toFixed(1), y: top, width: slot.toFixed(1), height: plotH, class: 'hover' }),
      segments,
      s('title', {}, `${d}: ${fmt(perDay[i])}`),
    );
  });
  const ticks = [0, 0.5, 1].map((f) => {
    const y = top + plotH - f * plotH;
    return s('g', { class: 'tick' }, s('line', { x1: left, x2: W - right, y1: y, y2: y }), s('text', { x: left - 4, y: y + 3, 'text-anchor': 'end' }, axis(max * f)));
  });
  const labels = [[0, 'start'], [Math.floor(days.length / 2), 'middle'], [days.length - 1, 'end']].map(([i, anchor]) =>
    s('text', { x: left + i * slot + (anchor === 'start' ? 0 : anchor === 'end' ? slot : slot / 2), y: H - 6, 'text-anchor': anchor, class: 'axis' }, days[i].slice(5)),
  );
  return h(
    'figure',
    { class: 'chart' },
    h('figcaption', {}, title, ' ', h('strong', {}, fmt(total))),
    s('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': `${title}: ${fmt(total)} in ${days.length} days`, 'data-testid': testid, 'data-metric': metric, 'data-total': total }, ticks, columns, labels),
    h('ul', { class: 'legend' }, shown.map((g, gi) => h('li', {}, h('span', { class: 'swatch', style: `background:${COLORS[gi % COLORS.length]}` }), String(g.name)))),
  );
}
