// The spend reports (src/runtime/reports.rs, src/runtime/objects/reports.rs): real calls with the
// openai SDK from several keys, a team, end users (`user`) and tags (`metadata.tags`), streams
// and a failure included; then each report's numbers checked exactly against the calls, what a
// virtual key may read, bad parameters, and a batch delivered twice counted once.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { startGateway, raw, userMessage, eventually, MASTER_KEY } from '../support/gateway.mjs';

const GPT = 'databricks-gpt-5-1';
const CLAUDE = 'databricks-claude-sonnet-4-5';
// tests/fixtures/litellm_config.yaml's prices for GPT, in pico-dollars a token.
const GPT_PRICES = { input: 1_249_990n, output: 9_999_990n };
const DAY_MS = 86_400_000;

const hash = (key) => createHash('sha256').update(key).digest('hex');
/** An `x-litellm-response-cost` (exact decimal USD) in pico-dollars. */
const pico = (usd) => {
  const [whole, frac = ''] = String(usd).split('.');
  return BigInt(whole) * 1_000_000_000_000n + BigInt(frac.padEnd(12, '0').slice(0, 12));
};
/** A report's USD amount as the gateway renders an exact pico-dollar sum. */
const usd = (picoSum) => Number(picoSum) / 1e12;
const day = (ms) => new Date(ms).toISOString().slice(0, 10);

let gw;
/** What the calls add up to, built as they are made. */
const expected = { calls: [] };

function record(call) {
  expected.calls.push(call);
}

/** A chat call through the SDK; returns what the reports must count for it. */
async function chat(client, key, { model = GPT, user, tags, fail = false } = {}) {
  const body = { model, messages: userMessage(`report me ${expected.calls.length}`) };
  if (user) body.user = user;
  if (tags) body.metadata = { tags };
  if (fail) {
    const res = await raw(gw, '/v1/chat/completions', { key, body: { ...body, model: 'missing-endpoint' } });
    assert.equal(res.status, 404, res.text);
    record({ key, model: 'missing-endpoint', user, tags, spend: 0n, prompt: 0, completion: 0, failed: true });
    return;
  }
  const { data, response } = await client.chat.completions.create(body).withResponse();
  const spend = pico(response.headers.get('x-litellm-response-cost'));
  record({ key, model, user, tags, spend, prompt: data.usage.prompt_tokens, completion: data.usage.completion_tokens });
}

/** A streamed chat call; its cost from the final usage chunk and the configured prices. */
async function stream(client, key, { user, tags } = {}) {
  const body = {
    model: GPT,
    stream: true,
    stream_options: { include_usage: true },
    messages: userMessage('stream a report'),
  };
  if (user) body.user = user;
  if (tags) body.metadata = { tags };
  let usage;
  for await (const chunk of await client.chat.completions.create(body)) {
    if (chunk.usage) usage = chunk.usage;
  }
  assert.ok(usage, 'the stream reports its usage');
  const spend = BigInt(usage.prompt_tokens) * GPT_PRICES.input + BigInt(usage.completion_tokens) * GPT_PRICES.output;
  record({ key, model: GPT, user, tags, spend, prompt: usage.prompt_tokens, completion: usage.completion_tokens });
}

const sum = (calls, f = (c) => c.spend) => calls.reduce((a, c) => a + f(c), 0n);
const get = (path, key = MASTER_KEY) => raw(gw, path, { method: 'GET', key });
const range = () => `start_date=${day(Date.now() - DAY_MS)}&end_date=${day(Date.now() + DAY_MS)}`;

let alpha; // team-a, alias "alpha"
let beta; // team-a
let gamma; // no team

before(async () => {
  gw = await startGateway();
  const generate = async (body) => (await raw(gw, '/key/generate', { body })).json.key;
  assert.equal((await raw(gw, '/team/new', { body: { team_id: 'team-a', team_alias: 'Team A' } })).status, 200);
  alpha = await generate({ team_id: 'team-a', key_alias: 'alpha' });
  beta = await generate({ team_id: 'team-a' });
  gamma = await generate({});
  const as = (key) => gw.client({ apiKey: key });
  await chat(as(alpha), alpha, { user: 'alice', tags: ['prod', 'batch'] });
  await chat(as(alpha), alpha, { user: 'alice', tags: ['prod', 'batch', 'prod'] });
  await chat(as(alpha), alpha, { user: 'alice', fail: true });
  await stream(as(beta), beta, { user: 'bob', tags: ['prod'] });
  await Promise.all([chat(as(beta), beta, { model: CLAUDE }), chat(as(gamma), gamma, { tags: ['nightly'] })]);
  await chat(gw.client(), MASTER_KEY, { user: 'alice' });
  // Every call is in the reports once its batch has been applied (seconds at most).
  await eventually(
    async () => {
      const rows = (await get(`/global/spend/report?group_by=api_key&${range()}`)).json;
      const models = new Set(rows.flatMap((r) => r.model_details.map((m) => m.model)));
      return models.has('missing-endpoint') && sum(expected.calls) === rows.reduce((a, r) => a + pico(r.total_cost), 0n);
    },
    5000,
    'every call in the reports',
  );
});

after(async () => {
  await gw?.close();
});

test('the team report: per day, each team with its spend and its spend per model and key', async () => {
  const res = await get(`/global/spend/report?${range()}&group_by=team`);
  assert.equal(res.status, 200, res.text);
  const teams = res.json.flatMap((d) => d.teams);
  assert.match(res.json[0].group_by_day, /^\d{4}-\d{2}-\d{2}T00:00:00\+00:00$/);
  const teamA = teams.filter((t) => t.team_name === 'team-a');
  const unassigned = teams.filter((t) => t.team_name === 'Unassigned Team');
  const inTeam = expected.calls.filter((c) => c.key === alpha || c.key === beta);
  const outside = expected.calls.filter((c) => c.key === gamma || c.key === MASTER_KEY);
  assert.equal(teamA.reduce((a, t) => a + pico(t.total_spend), 0n), sum(inTeam));
  assert.equal(unassigned.reduce((a, t) => a + pico(t.total_spend), 0n), sum(outside));
  assert.ok(sum(inTeam) > 0n && sum(outside) > 0n);
  // The breakdown: one entry per (model, key), with its tokens.
  const metadata = teamA.flatMap((t) => t.metadata);
  const alphaGpt = metadata.find((m) => m.api_key === hash(alpha) && m.model === GPT);
  const alphaCalls = expected.calls.filter((c) => c.key === alpha && c.model === GPT);
  assert.equal(pico(alphaGpt.spend), sum(alphaCalls));
  assert.equal(alphaGpt.total_tokens, alphaCalls.reduce((a, c) => a + c.prompt + c.completion, 0));
  assert.ok(metadata.some((m) => m.api_key === hash(beta) && m.model === CLAUDE));
  assert.ok(metadata.some((m) => m.api_key === hash(alpha) && m.model === 'missing-endpoint' && m.spend === 0));
  // Narrowed to one team, or to one end user.
  const narrowed = (await get(`/global/spend/report?${range()}&group_by=team&team_id=team-a`)).json;
  assert.deepEqual([...new Set(narrowed.flatMap((d) => d.teams.map((t) => t.team_name)))], ['team-a']);
  const alice = (await get(`/global/spend/report?${range()}&group_by=api_key&customer_id=alice`)).json;
  assert.equal(alice.reduce((a, k) => a + pico(k.total_cost), 0n), sum(expected.calls.filter((c) => c.user === 'alice')));
});

test('the customer report groups by end user, the master key\'s calls included', async () => {
  const res = await get(`/global/spend/report?${range()}&group_by=customer`);
  assert.equal(res.status, 200, res.text);
  const customers = res.json.flatMap((d) => d.customers);
  const of = (name) => customers.filter((c) => c.customer === name).reduce((a, c) => a + pico(c.total_spend), 0n);
  assert.equal(of('alice'), sum(expected.calls.filter((c) => c.user === 'alice')));
  assert.equal(of('bob'), sum(expected.calls.filter((c) => c.user === 'bob')));
  assert.equal(of(null), sum(expected.calls.filter((c) => !c.user)));
  const master = customers.flatMap((c) => c.metadata).filter((m) => m.api_key === '');
  assert.equal(master.length, 1, 'the master key is recorded under an empty key hash');
});

test('the key report: each key\'s cost and tokens over the range, per model, dearest first', async () => {
  const res = await get(`/global/spend/report?${range()}&group_by=api_key`);
  assert.equal(res.status, 200, res.text);
  const keys = res.json;
  for (const key of [alpha, beta, gamma]) {
    const row = keys.find((k) => k.api_key === hash(key));
    const calls = expected.calls.filter((c) => c.key === key);
    assert.equal(pico(row.total_cost), sum(calls), key);
    assert.equal(row.total_input_tokens, calls.reduce((a, c) => a + c.prompt, 0));
    assert.equal(row.total_output_tokens, calls.reduce((a, c) => a + c.completion, 0));
    assert.equal(row.model_details.length, new Set(calls.map((c) => c.model)).size);
  }
  const costs = keys.map((k) => k.total_cost);
  assert.deepEqual(costs, [...costs].sort((a, b) => b - a));
});

test('top keys and models over the last 30 days, with limits', async () => {
  const keys = (await get('/global/spend/keys')).json;
  const byKey = (key) => keys.find((k) => k.api_key === hash(key));
  assert.equal(byKey(alpha).key_alias, 'alpha');
  assert.equal(byKey(beta).key_alias, null);
  for (const key of [alpha, beta, gamma, MASTER_KEY]) {
    const row = key === MASTER_KEY ? keys.find((k) => k.api_key === '') : byKey(key);
    assert.equal(pico(row.total_spend), sum(expected.calls.filter((c) => c.key === key)));
  }
  assert.equal((await get('/global/spend/keys?limit=2')).json.length, 2);
  const models = (await get('/global/spend/models')).json;
  assert.equal(pico(models.find((m) => m.model === GPT).total_spend), sum(expected.calls.filter((c) => c.model === GPT)));
  assert.equal(pico(models.find((m) => m.model === CLAUDE).total_spend), sum(expected.calls.filter((c) => c.model === CLAUDE)));
  assert.deepEqual(models.map((m) => m.total_spend), models.map((m) => m.total_spend).sort((a, b) => b - a));
  assert.equal((await get('/global/spend/models?limit=1')).json.length, 1);
  for (const bad of ['0', '-1', 'ten']) {
    const res = await get(`/global/spend/keys?limit=${bad}`);
    assert.equal(res.status, 400, bad);
    assert.equal(res.json.error.param, 'limit');
  }
});

test('tags: each tag\'s requests and spend, a tag repeated in one request counted once', async () => {
  const res = await get(`/spend/tags?${range()}`);
  assert.equal(res.status, 200, res.text);
  const tag = (name) => res.json.find((t) => t.individual_request_tag === name);
  for (const name of ['prod', 'batch', 'nightly']) {
    const calls = expected.calls.filter((c) => c.tags?.includes(name));
    assert.equal(tag(name).log_count, calls.length, name);
    assert.equal(pico(tag(name).total_spend), sum(calls), name);
  }
  assert.equal(tag('prod').log_count, 3);
  // Without dates: everything; a range before the calls: nothing.
  assert.equal((await get('/spend/tags')).json.length, 3);
  assert.deepEqual((await get('/spend/tags?start_date=2020-01-01&end_date=2020-01-02')).json, []);
});

test('a virtual key reads only its own rows; another key\'s are refused', async () => {
  const own = await get(`/global/spend/report?${range()}&group_by=api_key`, alpha);
  assert.equal(own.status, 200, own.text);
  assert.deepEqual(own.json.map((k) => k.api_key), [hash(alpha)]);
  const ownTags = (await get('/spend/tags', alpha)).json.map((t) => t.individual_request_tag).sort();
  assert.deepEqual(ownTags, ['batch', 'prod']);
  assert.deepEqual((await get('/global/spend/keys', gamma)).json.map((k) => k.api_key), [hash(gamma)]);
  for (const path of [`/global/spend/report?${range()}&api_key=${hash(beta)}`, `/spend/tags?api_key=${beta}`]) {
    const res = await get(path, alpha);
    assert.equal(res.status, 403, path);
    assert.equal(res.json.error.type, 'permission_error');
  }
  assert.equal((await get('/global/spend/keys', 'sk-not-a-key')).status, 401);
});

test('bad dates and groupings are 400s naming the parameter', async () => {
  const today = day(Date.now());
  for (const [query, param] of [
    [`end_date=${today}`, 'start_date'],
    [`start_date=${today}`, 'end_date'],
    [`start_date=2026-13-01&end_date=${today}`, 'start_date'],
    [`start_date=${today}T00:00:00Z&end_date=${today}`, 'start_date'],
    [`start_date=${today}&end_date=2020-01-01`, 'start_date'],
    [`start_date=2020-01-01&end_date=2026-01-01`, 'end_date'],
    [`start_date=${today}&end_date=${today}&group_by=model`, 'group_by'],
  ]) {
    const res = await get(`/global/spend/report?${query}`);
    assert.equal(res.status, 400, `${query}: ${res.text}`);
    assert.equal(res.json.error.param, param, query);
    assert.equal(res.json.error.type, 'invalid_request_error');
  }
  assert.equal((await get('/spend/tags?start_date=yesterday')).status, 400);
  assert.equal((await raw(gw, '/global/spend/report', { body: {} })).status, 405);
});

test('a batch delivered twice counts once (idempotent by call id)', async () => {
  const namespace = await gw.mf.getDurableObjectNamespace('REPORTS');
  const object = namespace.get(namespace.idFromName('global'));
  const now = Date.now();
  // One event as the worker encodes it (src/reports.rs, ReportEvent::encode).
  const event = ['retried-call-1', now, 'f'.repeat(64), 'retry', 'team-r', '', 'rita', GPT, 'gpt51-primary', 7, 3, '1234567', 200, 12, ['retry']];
  const send = async () => (await (await object.fetch('https://object/record', { method: 'POST', body: JSON.stringify([event, event]) })).json()).applied;
  assert.equal(await send(), 1, 'a call twice in one batch counts once');
  assert.equal(await send(), 0, 'the batch sent again counts nothing');
  const keys = (await get(`/global/spend/report?${range()}&group_by=api_key`)).json;
  const row = keys.find((k) => k.api_key === 'f'.repeat(64));
  assert.deepEqual(
    [row.total_cost, row.total_input_tokens, row.total_output_tokens],
    [usd(1_234_567n), 7, 3],
  );
  const tags = (await get('/spend/tags')).json;
  assert.equal(tags.find((t) => t.individual_request_tag === 'retry').log_count, 1);
});

test('an end user\'s spend, the query a customer budget will read', async () => {
  const namespace = await gw.mf.getDurableObjectNamespace('REPORTS');
  const object = namespace.get(namespace.idFromName('global'));
  const ask = async (request) =>
    (await (await object.fetch('https://object/end-user-spend', { method: 'POST', body: JSON.stringify(request) })).json()).spend;
  assert.equal(BigInt(await ask({ end_user: 'alice' })), sum(expected.calls.filter((c) => c.user === 'alice')));
  assert.equal(BigInt(await ask({ end_user: 'bob', start: day(Date.now() - DAY_MS), end: day(Date.now() + DAY_MS) })), sum(expected.calls.filter((c) => c.user === 'bob')));
  assert.equal(await ask({ end_user: 'alice', end: '2020-01-01' }), '0');
  assert.equal(await ask({ end_user: 'nobody' }), '0');
});
