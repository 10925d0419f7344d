// Model access groups and per-model budgets on keys, as a platform team uses them: a key limited
// to an access group (`model_info.access_groups` in tests/fixtures/litellm_config.yaml:
// `claude-priced` holds priced-claude and claude-cache-priced), `/model_group/info`, and
// `model_max_budget` held exactly in the key's own ledger under racing requests, beside the
// key's other models, with its own period.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { startGateway, raw, userMessage } from '../support/gateway.mjs';

let gw;
before(async () => {
  gw = await startGateway();
});
after(async () => {
  await gw?.close();
});

const GROUP_MODELS = ['priced-claude', 'claude-cache-priced'];
// priced-claude: $0.001 a prompt token, $0.002 a completion token, a Claude-family endpoint
// (README: the budget holds the prompt's bytes + 1, 16 a request and 8 a message).
const holdUsd = (text, maxTokens) => (Buffer.byteLength(text) + 1 + 16 + 8) * 0.001 + maxTokens * 0.002;

async function generate(fields) {
  const res = await raw(gw, '/key/generate', { body: fields });
  assert.equal(res.status, 200, res.text);
  return res.json.key;
}

const sdk = (key) => new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: key, maxRetries: 0 });
const chat = (key, model, content, extra = {}) =>
  raw(gw, '/v1/chat/completions', { key, body: { model, messages: userMessage(content), ...extra } });
const keyInfo = async (key) => {
  const res = await raw(gw, `/key/info?key=${key}`, { method: 'GET' });
  assert.equal(res.status, 200, res.text);
  return res.json.info;
};

test('a key limited to an access group uses each of its models and is refused every other, typed', async () => {
  const key = await generate({ models: ['claude-priced'] });
  const client = sdk(key);
  for (const model of GROUP_MODELS) {
    const answer = await client.chat.completions.create({ model, messages: userMessage('Hello!'), max_tokens: 5 });
    assert.equal(answer.choices[0].message.content, 'Echo: Hello!');
    assert.equal(answer.model, model);
  }
  for (const model of ['databricks-gpt-5-1', 'claude-haiku-4-5']) {
    await assert.rejects(
      client.chat.completions.create({ model, messages: userMessage('Hello!') }),
      (e) => e instanceof OpenAI.AuthenticationError && e.status === 401 && e.type === 'key_model_access_denied',
    );
  }
  // The group's name is not a model.
  await assert.rejects(
    client.chat.completions.create({ model: 'claude-priced', messages: userMessage('Hello!') }),
    (e) => e instanceof OpenAI.APIError && [400, 401].includes(e.status),
  );
  const listed = [];
  for await (const m of client.models.list()) listed.push(m.id);
  assert.deepEqual(listed.sort(), [...GROUP_MODELS].sort());
  const one = await client.models.retrieve('claude-cache-priced');
  assert.equal(one.id, 'claude-cache-priced');
  await assert.rejects(client.models.retrieve('databricks-gpt-5-1'), (e) => e instanceof OpenAI.NotFoundError);
  // /model/info lists the group's deployments only.
  const info = await raw(gw, '/model/info', { method: 'GET', key });
  assert.deepEqual([...new Set(info.json.data.map((d) => d.model_name))].sort(), [...GROUP_MODELS].sort());
});

test('an access group works with limits (the ledger admits by the group) and beside named models and aliases', async () => {
  const key = await generate({
    models: ['claude-priced', 'databricks-gpt-5-1', 'fast'],
    aliases: { fast: 'legacy-completions' },
    rpm_limit: 50,
    max_budget: 5,
  });
  for (const model of [...GROUP_MODELS, 'databricks-gpt-5-1']) {
    const res = await chat(key, model, 'Hello!', { max_tokens: 5 });
    assert.equal(res.status, 200, `${model}: ${res.text}`);
    assert.equal(res.headers.get('x-ratelimit-limit-requests'), '50');
  }
  assert.equal((await chat(key, 'databricks-gpt-oss-120b', 'Hello!')).status, 401);
  // Narrowed to the group alone: refused at once outside it, served inside it.
  const narrowed = await raw(gw, '/key/update', { body: { key, models: ['claude-priced'] } });
  assert.equal(narrowed.status, 200, narrowed.text);
  assert.equal((await chat(key, 'databricks-gpt-5-1', 'Hello!', { max_tokens: 5 })).status, 401);
  assert.equal((await chat(key, 'priced-claude', 'Hello!', { max_tokens: 5 })).status, 200);
});

test('a key may only name configured models or access groups', async () => {
  const res = await raw(gw, '/key/generate', { body: { models: ['claude-priced', 'no-such-group'] } });
  assert.equal(res.status, 400, res.text);
  assert.equal(res.json.error.param, 'models');
  assert.match(res.json.error.message, /no-such-group/);
});

test('/model_group/info: LiteLLM\'s shape, every group for the master key, a key\'s groups only for the key', async () => {
  const all = await raw(gw, '/model_group/info', { method: 'GET' });
  assert.equal(all.status, 200, all.text);
  const groups = Object.fromEntries(all.json.data.map((g) => [g.model_group, g]));
  assert.ok(groups['databricks-gpt-5-1'] && groups.balanced && groups['databricks-gte-large-en']);
  assert.deepEqual(groups['priced-claude'], {
    model_group: 'priced-claude',
    providers: ['databricks'],
    max_input_tokens: null,
    max_output_tokens: null,
    input_cost_per_token: 0.001,
    output_cost_per_token: 0.002,
    mode: 'chat',
    tpm: null,
    rpm: null,
    access_groups: ['claude-priced'],
  });
  assert.equal(groups['databricks-gte-large-en'].mode, 'embedding');
  assert.equal(groups['small-context'].max_input_tokens, 50);
  assert.deepEqual(groups['databricks-gpt-5-1'].access_groups, []);
  // Two deployments: one entry, limits summed.
  assert.equal(all.json.data.filter((g) => g.model_group === 'balanced').length, 1);

  const key = await generate({ models: ['claude-priced'] });
  const mine = await raw(gw, '/model_group/info', { method: 'GET', key });
  assert.deepEqual(mine.json.data.map((g) => g.model_group).sort(), [...GROUP_MODELS].sort());
  const picked = await raw(gw, '/model_group/info?model_group=claude-cache-priced', { method: 'GET', key });
  assert.deepEqual(picked.json.data.map((g) => g.model_group), ['claude-cache-priced']);
  const outside = await raw(gw, '/model_group/info?model_group=databricks-gpt-5-1', { method: 'GET', key });
  assert.deepEqual(outside.json.data, []);
  assert.equal((await raw(gw, '/model_group/info', { method: 'GET', key: 'sk-not-a-key-000' })).status, 401);
});

test('model_max_budget is validated: configured models, budgets of 0 or more, real periods', async () => {
  for (const [model_max_budget, why] of [
    [{ 'gpt-4': { budget_limit: 1, time_period: '1d' } }, 'unknown model'],
    [{ 'priced-claude': { budget_limit: -0.5, time_period: '1d' } }, 'negative'],
    [{ 'priced-claude': { budget_limit: 1, time_period: 'daily' } }, 'bad period'],
    [{ 'priced-claude': { time_period: '1d' } }, 'no limit'],
    [{ 'priced-claude': 5 }, 'not an object'],
  ]) {
    const res = await raw(gw, '/key/generate', { body: { model_max_budget } });
    assert.equal(res.status, 400, `${why}: ${res.text}`);
    assert.equal(res.json.error.param, 'model_max_budget', why);
  }
  const key = await generate({});
  const bad = await raw(gw, '/key/update', { body: { key, model_max_budget: { 'priced-claude': { budget_limit: 'x' } } } });
  assert.equal(bad.status, 400);
});

test('a model budget that fits exactly 3 requests admits exactly 3 of 8 racing, names the model, and leaves other models alone', async () => {
  // Each request holds its worst case; the fake holds every answer for two seconds, so all eight
  // are admitted or refused before any settles.
  const prompt = 'Hello! [fake:delay=2000]';
  const hold = holdUsd(prompt, 10);
  const limit = Number((3.5 * hold).toFixed(6));
  const key = await generate({
    key_alias: 'model-budget-racer',
    model_max_budget: { 'priced-claude': { budget_limit: limit, time_period: '1d' } },
  });
  const client = sdk(key);
  const racing = Array.from({ length: 8 }, () =>
    client.chat.completions.create({ model: 'priced-claude', messages: userMessage(prompt), max_tokens: 10 }).then(
      (answer) => ({ answer }),
      (error) => ({ error }),
    ),
  );
  // Meanwhile the same key's other model is not held by priced-claude's budget.
  const other = await client.chat.completions.create({ model: 'claude-cache-priced', messages: userMessage('Hi'), max_tokens: 5 });
  assert.equal(other.choices[0].message.content, 'Echo: Hi');
  const results = await Promise.all(racing);
  const admitted = results.filter((r) => r.answer);
  assert.equal(admitted.length, 3, results.map((r) => r.error?.message ?? 'ok').join('\n'));
  for (const { error } of results.filter((r) => r.error)) {
    assert.ok(error instanceof OpenAI.BadRequestError, String(error));
    assert.equal(error.type, 'budget_exceeded');
    assert.match(error.message, /exceeded budget for model=priced-claude/);
    assert.match(error.message, /key_alias: model-budget-racer/);
  }

  // /key/info: the budget as set, and the spend on the model (the three settled) in its period.
  const info = await keyInfo(key);
  assert.deepEqual(info.model_max_budget, { 'priced-claude': { budget_limit: limit, time_period: '1d' } });
  const usage = info.model_max_budget_usage['priced-claude'];
  assert.equal(usage.budget_limit, limit);
  assert.equal(usage.time_period, '1d');
  assert.ok(Date.parse(usage.budget_reset_at) > Date.now() + 23 * 3_600_000, usage.budget_reset_at);
  assert.ok(usage.current_spend > 0 && usage.current_spend <= limit, JSON.stringify(usage));
  // The key's own spend counts both models.
  assert.ok(info.spend > usage.current_spend, `${info.spend} vs ${usage.current_spend}`);

  // One at a time until the budget refuses (each answer costs about $0.005 of its $0.051 hold):
  // the model's spend never passes its limit.
  let refused;
  for (let i = 0; i < 80 && !refused; i++) {
    const res = await chat(key, 'priced-claude', 'Hello!', { max_tokens: 10 });
    if (res.status !== 200) refused = res;
  }
  assert.ok(refused, 'the model budget ends');
  assert.equal(refused.status, 400);
  assert.equal(refused.json.error.type, 'budget_exceeded');
  assert.match(refused.json.error.message, /exceeded budget for model=priced-claude/);
  const after = (await keyInfo(key)).model_max_budget_usage['priced-claude'];
  assert.ok(after.current_spend <= limit + 1e-12, `${after.current_spend} passed ${limit}`);
  assert.ok(after.current_spend >= limit - holdUsd('Hello!', 10) - 1e-9, 'spendable to within one hold');
  // The other model still works on the same key.
  assert.equal((await chat(key, 'claude-cache-priced', 'Hello!', { max_tokens: 5 })).status, 200);
});

test('a model budget resets when its period ends', async () => {
  const hold = holdUsd('Hello!', 10);
  const key = await generate({
    model_max_budget: { 'priced-claude': { budget_limit: Number((1.5 * hold).toFixed(6)), time_period: '3s' } },
  });
  // Each answer costs far less than its hold: requests are admitted until what was spent leaves
  // no room for one more hold, within the period.
  assert.equal((await chat(key, 'priced-claude', 'Hello!', { max_tokens: 10 })).status, 200);
  let refused = false;
  for (let i = 0; i < 10 && !refused; i++) {
    refused = (await chat(key, 'priced-claude', 'Hello!', { max_tokens: 10 })).status === 400;
  }
  assert.ok(refused, 'refused within the period');
  const usage = (await keyInfo(key)).model_max_budget_usage['priced-claude'];
  const resetAt = Date.parse(usage.budget_reset_at);
  assert.ok(resetAt > Date.now() - 100 && resetAt <= Date.now() + 3_000, usage.budget_reset_at);
  await new Promise((r) => setTimeout(r, Math.max(0, resetAt - Date.now()) + 50));
  const next = await chat(key, 'priced-claude', 'Hello!', { max_tokens: 10 });
  assert.equal(next.status, 200, next.text);
  const fresh = (await keyInfo(key)).model_max_budget_usage['priced-claude'];
  assert.ok(Date.parse(fresh.budget_reset_at) > resetAt, 'a new period');
  assert.ok(fresh.current_spend < usage.current_spend + 1e-12, 'spend started again');
});

test('/key/update adds a model budget that holds at once, and removes it with null', async () => {
  const key = await generate({});
  assert.equal((await chat(key, 'priced-claude', 'Hello!', { max_tokens: 10 })).status, 200);
  const updated = await raw(gw, '/key/update', {
    body: { key, model_max_budget: { 'priced-claude': { budget_limit: 0.01 } } },
  });
  assert.equal(updated.status, 200, updated.text);
  assert.deepEqual(updated.json.model_max_budget, { 'priced-claude': { budget_limit: 0.01, time_period: null } });
  const refused = await chat(key, 'priced-claude', 'Hello!', { max_tokens: 10 });
  assert.equal(refused.status, 400);
  assert.match(refused.json.error.message, /exceeded budget for model=priced-claude/);
  assert.equal((await chat(key, 'databricks-gpt-5-1', 'Hello!', { max_tokens: 10 })).status, 200);
  const cleared = await raw(gw, '/key/update', { body: { key, model_max_budget: null } });
  assert.equal(cleared.status, 200, cleared.text);
  assert.deepEqual(cleared.json.model_max_budget, {});
  assert.equal((await chat(key, 'priced-claude', 'Hello!', { max_tokens: 10 })).status, 200);
});

test('a model budget on a model the gateway cannot price refuses it (400 naming what to set); others go on', async () => {
  const key = await generate({ model_max_budget: { ordered: { budget_limit: 1, time_period: '1d' } } });
  const refused = await chat(key, 'ordered', 'Hello!', { max_tokens: 5 });
  assert.equal(refused.status, 400, refused.text);
  assert.equal(refused.json.error.param, 'model');
  assert.match(refused.json.error.message, /input_cost_per_token/);
  assert.equal((await chat(key, 'balanced', 'Hello!', { max_tokens: 5 })).status, 200, 'no budget of its own, no price needed');
});
