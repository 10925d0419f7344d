// Teams, internal users and customers (end users): their endpoints, and their limits and
// budgets shared exactly by every key and request that draws on them, through the built
// worker under workerd with real KV and Durable Objects.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import OpenAI from 'openai';
import { startGateway, raw, userMessage, eventually } from '../support/gateway.mjs';

let gw;
before(async () => {
  gw = await startGateway();
});
after(async () => {
  await gw?.close();
});

// databricks-gpt-5-1's prices in tests/fixtures/litellm_config.yaml, in pico-dollars per token.
const INPUT_PICO = 1_249_990n;
const OUTPUT_PICO = 9_999_990n;
const costPico = (u) => BigInt(u.prompt_tokens) * INPUT_PICO + BigInt(u.completion_tokens) * OUTPUT_PICO;
const pico = (usd) => BigInt(Math.round(usd * 1e12));
const MODEL = 'databricks-gpt-5-1';

const post = (path, body, key) => raw(gw, path, { body, key });
const get = (path, key) => raw(gw, path, { method: 'GET', key });
const uid = (prefix) => `${prefix}-${randomUUID().slice(0, 8)}`;

async function ok(path, body) {
  const res = await post(path, body);
  assert.equal(res.status, 200, `${path}: ${res.text}`);
  return res.json;
}

function assertError(res, status, param, type) {
  assert.equal(res.status, status, res.text);
  assert.equal(res.json.error.code, String(status));
  if (param) assert.equal(res.json.error.param, param, res.text);
  if (type) assert.equal(res.json.error.type, type, res.text);
}

const send = (key, content, extra = {}) =>
  post('/v1/chat/completions', { model: MODEL, messages: userMessage(content), ...extra }, key);

test('teams: create, read, list, update, members, block, delete; field errors; master key only', async () => {
  const id = uid('team');
  const created = await ok('/team/new', {
    team_id: id,
    team_alias: 'Search',
    models: [MODEL],
    max_budget: 2.5,
    budget_duration: '30d',
    rpm_limit: 50,
    tpm_limit: 100000,
    max_parallel_requests: 4,
    metadata: { cost_center: '42' },
    members_with_roles: [{ user_id: 'ann', role: 'admin' }],
  });
  assert.equal(created.team_id, id);
  assert.equal(created.team_alias, 'Search');
  assert.deepEqual(created.models, [MODEL]);
  assert.equal(created.max_budget, 2.5);
  assert.equal(created.spend, 0);
  assert.equal(created.rpm_limit, 50);
  assert.equal(created.blocked, false);
  assert.deepEqual(created.members_with_roles, [{ user_id: 'ann', user_email: null, role: 'admin' }]);
  assert.ok(created.budget_reset_at, 'a budget period is reported');

  // Without a team_id one is made up.
  const anonymous = await ok('/team/new', { team_alias: 'no id' });
  assert.match(anonymous.team_id, /^[0-9a-f-]{36}$/);

  // A duplicate id, a bad field, an unknown model, an unknown field: 400 naming the field.
  assertError(await post('/team/new', { team_id: id }), 400, 'team_id');
  assertError(await post('/team/new', { team_id: uid('t'), max_budget: -1 }), 400, 'max_budget');
  assertError(await post('/team/new', { team_id: uid('t'), rpm_limit: 'ten' }), 400, 'rpm_limit');
  assertError(await post('/team/new', { team_id: uid('t'), models: ['no-such-model'] }), 400, 'models');
  assertError(await post('/team/new', { team_id: uid('t'), colour: 'red' }), 400, 'colour');
  assertError(await post('/team/new', { team_id: uid('t'), members_with_roles: [{ role: 'admin' }] }), 400, 'members_with_roles');
  assertError(await post('/team/new', '{not json'), 400);

  // A key made in the team shows up in /team/info; a key naming an unknown team is refused.
  const key = await ok('/key/generate', { team_id: id });
  assert.equal(key.team_id, id);
  assertError(await post('/key/generate', { team_id: uid('nope') }), 400, 'team_id');
  assertError(await post('/key/update', { key: key.key, team_id: uid('nope') }), 400, 'team_id');
  const info = (await get(`/team/info?team_id=${id}`)).json;
  assert.equal(info.team_id, id);
  assert.equal(info.team_info.team_alias, 'Search');
  assert.deepEqual(info.keys.map((k) => k.token), [key.token]);
  assertError(await get('/team/info?team_id=nope'), 404, 'team_id');
  assertError(await get('/team/info'), 400, 'team_id');

  const updated = await ok('/team/update', { team_id: id, rpm_limit: 60, team_alias: null });
  assert.equal(updated.team_id, id);
  assert.equal(updated.data.rpm_limit, 60);
  assert.equal(updated.data.team_alias, null);
  assert.equal(updated.data.max_budget, 2.5, 'fields not given stay');
  assertError(await post('/team/update', { team_id: 'nope', rpm_limit: 1 }), 404, 'team_id');
  assertError(await post('/team/update', { rpm_limit: 1 }), 400, 'team_id');

  let team = await ok('/team/member_add', { team_id: id, member: [{ user_id: 'bob' }, { user_email: 'cy@example.com', role: 'admin' }] });
  assert.deepEqual(team.members_with_roles.map((m) => [m.user_id ?? m.user_email, m.role]), [['ann', 'admin'], ['bob', 'user'], ['cy@example.com', 'admin']]);
  team = await ok('/team/member_add', { team_id: id, member: { user_id: 'bob', role: 'admin' } });
  assert.equal(team.members_with_roles.length, 3, 'a member added again changes role');
  team = await ok('/team/member_delete', { team_id: id, user_id: 'ann' });
  assert.deepEqual(team.members_with_roles.map((m) => m.user_id ?? m.user_email), ['bob', 'cy@example.com']);
  assertError(await post('/team/member_delete', { team_id: id, user_id: 'ann' }), 404, 'user_id');
  assertError(await post('/team/member_add', { team_id: id, member: { role: 'admin' } }), 400, 'member');

  assert.equal((await ok('/team/block', { team_id: id })).blocked, true);
  assert.equal((await ok('/team/unblock', { team_id: id })).blocked, false);
  assertError(await post('/team/block', { team_id: 'nope' }), 404, 'team_id');

  const listed = (await get('/team/list')).json;
  assert.ok(listed.some((t) => t.team_id === id && t.rpm_limit === 60));

  // A virtual key may not manage teams, users or customers.
  for (const [path, body] of [
    ['/team/new', { team_id: uid('t') }],
    ['/team/update', { team_id: id, rpm_limit: 1 }],
    ['/team/block', { team_id: id }],
    ['/team/member_add', { team_id: id, member: { user_id: 'x' } }],
    ['/user/new', {}],
    ['/customer/new', { user_id: 'x' }],
    ['/customer/block', { user_ids: ['x'] }],
  ]) {
    assertError(await post(path, body, key.key), 403);
  }
  for (const path of ['/team/list', `/team/info?team_id=${id}`, '/user/list', '/customer/list']) {
    assertError(await get(path, key.key), 403);
  }

  // Deleting: every id named must exist, else nothing goes. The team's keys are refused after.
  assertError(await post('/team/delete', { team_ids: [id, 'nope'] }), 404, 'team_ids');
  assertError(await post('/team/delete', { team_ids: [] }), 400, 'team_ids');
  assert.equal((await send(key.key, 'before delete')).status, 200);
  const deleted = await ok('/team/delete', { team_ids: [id, anonymous.team_id] });
  assert.deepEqual(deleted.map((t) => t.team_id).sort(), [id, anonymous.team_id].sort());
  assertError(await get(`/team/info?team_id=${id}`), 404);
  const refused = await send(key.key, 'after delete');
  assertError(refused, 401);
  assert.match(refused.json.error.message, new RegExp(`Team=${id}`));
});

test('internal users: create, duplicate 409, read with keys and teams, list, update, delete', async () => {
  const id = uid('user');
  const created = await ok('/user/new', {
    user_id: id,
    user_email: 'dana@example.com',
    user_role: 'internal_user_viewer',
    models: [MODEL],
    max_budget: 3,
    rpm_limit: 30,
  });
  assert.equal(created.user_id, id);
  assert.equal(created.user_email, 'dana@example.com');
  assert.equal(created.user_role, 'internal_user_viewer');
  assert.equal(created.spend, 0);
  const made = await ok('/user/new', {});
  assert.equal(made.user_role, 'internal_user');
  assertError(await post('/user/new', { user_id: id }), 409, 'user_id');
  assertError(await post('/user/new', { user_role: 'god' }), 400, 'user_role');
  assertError(await post('/user/new', { blocked: true }), 400, 'blocked');

  const teamId = uid('team');
  await ok('/team/new', { team_id: teamId, members_with_roles: [{ user_id: id }] });
  const key = await ok('/key/generate', { user_id: id });
  const info = (await get(`/user/info?user_id=${id}`)).json;
  assert.equal(info.user_id, id);
  assert.equal(info.user_info.max_budget, 3);
  assert.deepEqual(info.keys.map((k) => k.token), [key.token]);
  assert.deepEqual(info.teams.map((t) => t.team_id), [teamId]);
  assertError(await get('/user/info?user_id=nope'), 404, 'user_id');

  const updated = await ok('/user/update', { user_id: id, max_budget: 4, user_email: null });
  assert.equal(updated.data.max_budget, 4);
  assert.equal(updated.data.user_email, null);

  const page = (await get('/user/list?page_size=100')).json;
  assert.ok(page.users.some((u) => u.user_id === id && u.max_budget === 4));
  assert.equal(page.total, page.users.length);
  assertError(await get('/user/list?page_size=0'), 400, 'page_size');

  assertError(await post('/user/delete', { user_ids: [id, 'nope'] }), 404, 'user_ids');
  const deleted = await ok('/user/delete', { user_ids: [id, made.user_id] });
  assert.equal(deleted.deleted_users.length, 2);
  assertError(await get(`/user/info?user_id=${id}`), 404);
  // A key whose user has no record is bound by nothing more than itself.
  assert.equal((await send(key.key, 'user gone')).status, 200);
});

test('customers: create, read (404 unknown), list, update, block and unblock, delete', async () => {
  const id = uid('cust');
  const created = await ok('/customer/new', { user_id: id, alias: 'Acme', max_budget: 1.5, budget_duration: '1d', rpm_limit: 9 });
  assert.equal(created.user_id, id);
  assert.equal(created.alias, 'Acme');
  assert.equal(created.blocked, false);
  assert.equal(created.spend, 0);
  assert.equal(created.litellm_budget_table.max_budget, 1.5);
  assert.equal(created.litellm_budget_table.rpm_limit, 9);
  assertError(await post('/customer/new', { user_id: id }), 400, 'user_id');
  assertError(await post('/customer/new', {}), 400, 'user_id');
  assertError(await post('/customer/new', { user_id: uid('c'), models: [MODEL] }), 400, 'models');

  assert.equal((await get(`/customer/info?end_user_id=${id}`)).json.alias, 'Acme');
  assertError(await get('/customer/info?end_user_id=nobody'), 404);
  assert.equal((await ok('/customer/update', { user_id: id, max_budget: 2 })).litellm_budget_table.max_budget, 2);
  assert.ok((await get('/customer/list')).json.some((c) => c.user_id === id));
  // LiteLLM's other name for them.
  assert.equal((await get(`/end_user/info?end_user_id=${id}`)).status, 200);

  const other = uid('cust');
  await ok('/customer/new', { user_id: other });
  assert.deepEqual((await ok('/customer/block', { user_ids: [id, other] })).blocked_users, [id, other]);
  assert.equal((await get(`/customer/info?end_user_id=${other}`)).json.blocked, true);
  assertError(await post('/customer/block', { user_ids: ['nobody'] }), 404);
  assertError(await post('/customer/block', { user_id: id }), 400);
  await ok('/customer/unblock', { user_ids: [id, other] });
  assert.equal((await get(`/customer/info?end_user_id=${id}`)).json.blocked, false);

  const deleted = await ok('/customer/delete', { user_ids: [id, other] });
  assert.equal(deleted.deleted_customers, 2);
  assertError(await get(`/customer/info?end_user_id=${id}`), 404);
});

test("a team's rpm is shared exactly by its keys: 12 racing requests from two keys, rpm 5, exactly 5 pass", async () => {
  const id = uid('team');
  await ok('/team/new', { team_id: id, rpm_limit: 5 });
  const [a, b] = [await ok('/key/generate', { team_id: id }), await ok('/key/generate', { team_id: id })];
  const results = await Promise.all(Array.from({ length: 12 }, (_, i) => send(i % 2 ? a.key : b.key, `race ${i}`)));
  const passed = results.filter((r) => r.status === 200);
  const limited = results.filter((r) => r.status === 429);
  assert.equal(passed.length, 5);
  assert.equal(limited.length, 7);
  for (const r of limited) {
    assert.equal(r.json.error.type, 'rate_limit_exceeded');
    assert.match(r.json.error.message, new RegExp(`^Team=${id}: Rate limit reached: 5 requests per minute`));
    assert.ok(Number(r.headers.get('retry-after')) >= 1);
  }
});

test("a request its team refuses holds nothing in its key: the key's rpm is not consumed", async () => {
  const id = uid('team');
  await ok('/team/new', { team_id: id, rpm_limit: 1 });
  const key = await ok('/key/generate', { team_id: id, rpm_limit: 2 });
  assert.equal((await send(key.key, 'one')).status, 200);
  for (let i = 0; i < 3; i++) {
    const r = await send(key.key, `refused ${i}`);
    assertError(r, 429, null, 'rate_limit_exceeded');
    assert.match(r.json.error.message, new RegExp(`^Team=${id}:`));
  }
  // The team allows more: the key has used one of its two, whatever the team refused.
  await ok('/team/update', { team_id: id, rpm_limit: 100 });
  assert.equal((await send(key.key, 'two')).status, 200);
  const third = await send(key.key, 'three');
  assertError(third, 429);
  assert.match(third.json.error.message, /^Rate limit reached: 2 requests per minute/);
});

test("a team's budget under racing requests from two keys: never passed, and its spend is the sum of its keys'", async () => {
  const id = uid('team');
  const budgetUsd = 0.004;
  await ok('/team/new', { team_id: id, max_budget: budgetUsd });
  const keys = [await ok('/key/generate', { team_id: id }), await ok('/key/generate', { team_id: id })];
  const words = Array.from({ length: 60 }, (_, i) => `w${i}`).join(' ');
  const admitted = [];
  let refused = 0;
  for (let wave = 0; wave < 6; wave++) {
    const results = await Promise.all(Array.from({ length: 8 }, (_, i) => send(keys[i % 2].key, words, { max_tokens: 40 })));
    for (const r of results) {
      if (r.status === 200) {
        admitted.push(r.json.usage);
        continue;
      }
      assertError(r, 400, null, 'budget_exceeded');
      assert.match(r.json.error.message, new RegExp(`^Budget has been exceeded! Team=${id} Current cost: [\\d.]+, Max budget: 0\\.004$`));
      refused++;
    }
  }
  assert.ok(admitted.length >= 3, `admitted ${admitted.length}`);
  assert.ok(refused > 0, 'the budget refused some');
  const expected = admitted.reduce((sum, u) => sum + costPico(u), 0n);
  assert.ok(expected <= pico(budgetUsd));
  const team = (await get(`/team/info?team_id=${id}`)).json;
  assert.equal(pico(team.team_info.spend), expected, 'the team paid exactly the real costs');
  // The keys hold no limits: their spend arrives in the isolate's batches.
  await eventually(async () => {
    const spends = await Promise.all(keys.map(async (k) => (await get(`/key/info?key=${k.key}`)).json.info.spend));
    return spends.reduce((sum, s) => sum + pico(s), 0n) === expected;
  }, 5000, "the keys' spend to add up to the team's");
});

test('a blocked team and a blocked customer are refused at once, and served again when unblocked', async () => {
  for (const limits of [{}, { rpm_limit: 100 }]) {
    const id = uid('team');
    await ok('/team/new', { team_id: id, ...limits });
    const key = await ok('/key/generate', { team_id: id });
    assert.equal((await send(key.key, 'before')).status, 200);
    await ok('/team/block', { team_id: id });
    const r = await send(key.key, 'blocked');
    assertError(r, 401, null, 'authentication_error');
    assert.equal(r.json.error.message, `Team=${id} is blocked. Update via /team/unblock if you're an admin.`);
    await ok('/team/unblock', { team_id: id });
    assert.equal((await send(key.key, 'after')).status, 200);
  }

  const customer = uid('cust');
  await ok('/customer/new', { user_id: customer });
  const client = gw.client();
  await client.chat.completions.create({ model: MODEL, messages: userMessage('hi'), user: customer });
  await ok('/customer/block', { user_ids: [customer] });
  await assert.rejects(
    client.chat.completions.create({ model: MODEL, messages: userMessage('hi'), user: customer }),
    (e) => e instanceof OpenAI.AuthenticationError && e.message.includes(`End User=${customer} is blocked`),
  );
  // Anthropic's end user (metadata.user_id) is the same customer.
  const messages = await post('/v1/messages', { model: MODEL, max_tokens: 20, messages: userMessage('hi'), metadata: { user_id: customer } });
  assert.equal(messages.status, 401, messages.text);
  await ok('/customer/unblock', { user_ids: [customer] });
  await client.chat.completions.create({ model: MODEL, messages: userMessage('hi'), user: customer });
  // An end user with no record is served and costs nothing extra.
  await client.chat.completions.create({ model: MODEL, messages: userMessage('hi'), user: uid('stranger') });
});

test("a user's budget binds its keys; the refusal names the user", async () => {
  const id = uid('user');
  await ok('/user/new', { user_id: id, max_budget: 0.0005 });
  const keys = [await ok('/key/generate', { user_id: id }), await ok('/key/generate', { user_id: id })];
  const usages = [];
  let refusal;
  for (let i = 0; i < 40 && !refusal; i++) {
    const r = await send(keys[i % 2].key, 'spend it', { max_tokens: 10 });
    if (r.status === 200) usages.push(r.json.usage);
    else refusal = r;
  }
  assert.ok(refusal, 'the budget ran out');
  assertError(refusal, 400, null, 'budget_exceeded');
  assert.match(refusal.json.error.message, new RegExp(`^Budget has been exceeded! User=${id} Current cost:`));
  assert.ok(usages.length >= 1);
  const info = (await get(`/user/info?user_id=${id}`)).json;
  assert.equal(pico(info.user_info.spend), usages.reduce((s, u) => s + costPico(u), 0n));
  assert.equal(info.keys.length, 2);
});

test("a customer's rpm and budget bind every request naming it as `user`, with the SDK's typed errors", async () => {
  const client = gw.client();
  const rpmCustomer = uid('cust');
  await ok('/customer/new', { user_id: rpmCustomer, rpm_limit: 2 });
  const ask = (user, extra = {}) => client.chat.completions.create({ model: MODEL, messages: userMessage('hello'), user, ...extra });
  await ask(rpmCustomer);
  await ask(rpmCustomer);
  await assert.rejects(ask(rpmCustomer), (e) => e instanceof OpenAI.RateLimitError && e.message.includes(`End User=${rpmCustomer}`));

  const budgetCustomer = uid('cust');
  await ok('/customer/new', { user_id: budgetCustomer, max_budget: 0.0003 });
  const costs = [];
  let refused;
  for (let i = 0; i < 40 && !refused; i++) {
    try {
      costs.push(costPico((await ask(budgetCustomer, { max_tokens: 10 })).usage));
    } catch (e) {
      refused = e;
    }
  }
  assert.ok(refused instanceof OpenAI.BadRequestError, String(refused));
  assert.equal(refused.type ?? refused.error?.type, 'budget_exceeded');
  assert.match(refused.message, new RegExp(`End User=${budgetCustomer}`));
  const info = (await get(`/customer/info?end_user_id=${budgetCustomer}`)).json;
  assert.equal(pico(info.spend), costs.reduce((s, c) => s + c, 0n));
  assert.ok(pico(info.spend) <= pico(0.0003));
});

test('spend without limits: a team, user and customer with no limits still get the spend of every call', async () => {
  const [team, user, customer] = [uid('team'), uid('user'), uid('cust')];
  await ok('/team/new', { team_id: team });
  await ok('/user/new', { user_id: user });
  await ok('/customer/new', { user_id: customer });
  const key = await ok('/key/generate', { team_id: team, user_id: user });
  let expected = 0n;
  for (let i = 0; i < 4; i++) {
    const r = await send(key.key, `call ${i}`, { user: customer });
    assert.equal(r.status, 200, r.text);
    expected += costPico(r.json.usage);
  }
  // A stream too.
  const stream = await gw.client({ apiKey: key.key }).chat.completions.create({
    model: MODEL, messages: userMessage('streamed'), stream: true, stream_options: { include_usage: true }, user: customer,
  });
  let usage;
  for await (const chunk of stream) usage = chunk.usage ?? usage;
  expected += costPico(usage);
  const spends = async () => [
    (await get(`/team/info?team_id=${team}`)).json.team_info.spend,
    (await get(`/user/info?user_id=${user}`)).json.user_info.spend,
    (await get(`/customer/info?end_user_id=${customer}`)).json.spend,
    (await get(`/key/info?key=${key.key}`)).json.info.spend,
  ];
  await eventually(async () => (await spends()).every((s) => pico(s) === expected), 5000, 'every party to have the spend');
});

test("a team's models bind its keys, fallbacks included", async () => {
  const id = uid('team');
  await ok('/team/new', { team_id: id, models: [MODEL] });
  const key = await ok('/key/generate', { team_id: id });
  assert.equal((await send(key.key, 'allowed')).status, 200);
  const r = await post('/v1/chat/completions', { model: 'databricks-claude-sonnet-4-5', messages: userMessage('no') }, key.key);
  assertError(r, 401, 'model', 'key_model_access_denied');
  assert.match(r.json.error.message, new RegExp(`Team=${id}`));
});
