// The admin page's spend arithmetic (ui/charts.js), without a browser: both sources give the
// same daily series, and totals add up.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { lastDays, factsFromLogs, factsFromReport, rollup } from '../../ui/charts.js';

const NOW = Date.parse('2026-05-27T12:00:00Z');
const HASH_A = 'a'.repeat(64);
const HASH_B = 'b'.repeat(64);

test('the last 30 UTC days end today, oldest first', () => {
  const days = lastDays(30, NOW);
  assert.equal(days.length, 30);
  assert.equal(days[29], '2026-05-27');
  assert.equal(days[0], '2026-04-28');
});

test("LiteLLM's team report becomes facts per day, team, model and key", () => {
  const report = [
    {
      group_by_day: '2026-05-26T00:00:00+00:00',
      teams: [
        { team_name: 'Unassigned Team', total_spend: 0.25, metadata: [{ model: 'gpt', api_key: '', spend: 0.25, total_tokens: 5 }] },
        {
          team_name: 'team-a',
          total_spend: 1.5,
          metadata: [
            { model: 'gpt', api_key: HASH_A, spend: 1.0, total_tokens: 15 },
            { model: 'claude', api_key: HASH_B, spend: 0.5, total_tokens: 7 },
          ],
        },
      ],
    },
    { group_by_day: '2026-05-27T00:00:00+00:00', teams: [{ team_name: 'team-a', metadata: [{ model: 'gpt', api_key: HASH_A, spend: 2, total_tokens: 1, api_requests: 3 }] }] },
  ];
  const facts = factsFromReport(report, new Map([[HASH_A, 'alice']]));
  assert.deepEqual(facts.map((f) => [f.day, f.team, f.model, f.key, f.spend, f.requests]), [
    ['2026-05-26', 'Unassigned Team', 'gpt', 'master key', 0.25, null],
    ['2026-05-26', 'team-a', 'gpt', 'alice', 1, null],
    ['2026-05-26', 'team-a', 'claude', `${HASH_B.slice(0, 10)}…`, 0.5, null],
    ['2026-05-27', 'team-a', 'gpt', 'alice', 2, 3],
  ]);

  const days = lastDays(30, NOW);
  const byTeam = rollup(facts, 'team', days);
  assert.deepEqual(byTeam.groups.map((g) => [g.name, g.total.spend]), [['team-a', 3.5], ['Unassigned Team', 0.25]]);
  assert.equal(byTeam.total.spend, 3.75);
  assert.equal(byTeam.total.requestsKnown, false, 'the report has no request counts for 05-26');
  const a = byTeam.groups[0];
  assert.deepEqual([a.spend[28], a.spend[29], a.tokens[28]], [1.5, 2, 22]);
});

test('spend log rows count one request each, on their own UTC day', () => {
  const rows = [
    { startTime: '2026-05-27T00:00:01Z', key_alias: 'alice', api_key: HASH_A, model_group: 'gpt', team_id: 't1', spend: 0.1, total_tokens: 10 },
    { startTime: '2026-05-26T23:59:59Z', key_alias: null, api_key: HASH_B, model_group: 'gpt', team_id: null, spend: 0.2, total_tokens: 20 },
    { startTime: '2026-05-27T08:00:00Z', key_alias: 'alice', api_key: HASH_A, model_group: 'claude', team_id: 't1', spend: 0.3, total_tokens: 30 },
    { startTime: '2026-01-01T00:00:00Z', key_alias: 'alice', api_key: HASH_A, model_group: 'gpt', team_id: 't1', spend: 9, total_tokens: 9 },
  ];
  const byModel = rollup(factsFromLogs(rows), 'model', lastDays(30, NOW));
  assert.deepEqual(byModel.total, { spend: 0.6000000000000001, requests: 3, tokens: 60, requestsKnown: true });
  const gpt = byModel.groups.find((g) => g.name === 'gpt');
  assert.deepEqual([gpt.requests[28], gpt.requests[29], gpt.total.requests], [1, 1, 2]);
  const byKey = rollup(factsFromLogs(rows), 'key', lastDays(30, NOW));
  assert.deepEqual(byKey.groups.map((g) => [g.name, g.total.requests]), [['alice', 2], [`${HASH_B.slice(0, 10)}…`, 1]]);
  assert.deepEqual(rollup(factsFromLogs(rows), 'team', lastDays(30, NOW)).groups.map((g) => g.name), ['t1', 'Unassigned Team']);
});
