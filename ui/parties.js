// Teams, users and customers (end users): read-only lists from LiteLLM's `/team/list`,
// `/user/list` and `/customer/list`, in LiteLLM's shapes. A gateway without these routes yet
// says so instead of failing.

import { api, isMissingRoute } from './api.js';
import { h, clear, table, notice, usd } from './dom.js';

const budget = (row) => row.max_budget ?? row.litellm_budget_table?.max_budget ?? null;
const state = (row) => h('span', { class: `badge ${row.blocked ? 'bad' : 'ok'}` }, row.blocked ? 'blocked' : 'active');
const list = (v) => (Array.isArray(v) && v.length ? v.join(', ') : 'all');

/** What each kind lists and shows. */
const KINDS = {
  team: {
    path: '/team/list',
    id: (r) => r.team_id,
    columns: [
      { label: 'Team', value: (r) => r.team_alias || r.team_id },
      { label: 'Id', value: (r) => h('code', {}, r.team_id) },
      { label: 'Members', value: (r) => String((r.members_with_roles || []).length) },
      { label: 'Models', value: (r) => list(r.models) },
    ],
  },
  user: {
    path: '/user/list',
    id: (r) => r.user_id,
    columns: [
      { label: 'User', value: (r) => h('code', {}, r.user_id) },
      { label: 'Email', value: (r) => r.user_email || '—' },
      { label: 'Role', value: (r) => r.user_role || '—' },
      { label: 'Models', value: (r) => list(r.models) },
    ],
  },
  customer: {
    path: '/customer/list',
    id: (r) => r.user_id,
    columns: [
      { label: 'Customer', value: (r) => h('code', {}, r.user_id) },
      { label: 'Alias', value: (r) => r.alias || '—' },
    ],
  },
};
const COMMON = [
  { label: 'Spend', value: (r) => usd(r.spend ?? 0), className: 'num' },
  { label: 'Budget', value: (r) => usd(budget(r)), className: 'num' },
  { label: 'State', value: state },
];

export function partyPage(kind) {
  const k = KINDS[kind];
  return async (section, ctx) => {
    const box = h('div', {}, h('p', { class: 'loading' }, 'Loading…'));
    section.append(box);
    let answer;
    try {
      answer = await api(k.path);
    } catch (e) {
      if (ctx.stale()) return;
      clear(box, isMissingRoute(e) ? notice('info', `This gateway does not serve ${k.path} yet.`) : notice('error', e.message));
      return;
    }
    if (ctx.stale()) return;
    const rows = Array.isArray(answer) ? answer : answer.users || answer.teams || answer.customers || answer.data || [];
    clear(box, table([...k.columns, ...COMMON], rows, { empty: `No ${kind}s yet.`, testid: `${kind}s`, rowAttrs: (r) => ({ 'data-id': k.id(r) || '' }) }));
  };
}
