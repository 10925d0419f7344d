// Admission as a new user meets it: token limits on an estimate, budgets on a tight bound that
// racing requests never pass, `n`, arithmetic that saturates, a key's scope on every path
// (fallbacks, a narrowed `models` seen by another isolate), and models without a price.
// Each test makes its own keys; budgets and limits are small realistic numbers.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startGateway, raw, userMessage, eventually } from '../support/gateway.mjs';
import { startTwoIsolates } from '../support/isolates.mjs';

let gw;
before(async () => {
  gw = await startGateway();
});
after(async () => {
  await gw?.close();
});

// priced-claude in tests/fixtures/litellm_config.yaml: $0.001 in, $0.002 out, a Claude-family
// endpoint. The README's allowances for that family: 16 tokens a request, 8 a message, and one
// more per text for a dummy prefix.
const INPUT_USD = 0.001;
const OUTPUT_USD = 0.002;
const claudeBoundTokens = (text) => Buffer.byteLength(text) + 1 + 16 + 8;

async function generate(fields) {
  const res = await raw(gw, '/key/generate', { body: fields });
  assert.equal(res.status, 200, res.text);
  return res.json.key;
}

const chat = (key, model, content, extra = {}) =>
  raw(gw, '/v1/chat/completions', { key, body: { model, messages: userMessage(content), ...extra } });
const spendOf = async (key) => (await raw(gw, `/key/info?key=${key}`, { method: 'GET' })).json.info.spend;
const count = (endpoint) => gw.fake.countsByEndpoint[endpoint] ?? 0;

test('tpm_limit 30 admits a "Hello!" with max_tokens 5 (about 13 tokens), and counts what it used', async () => {
  const key = await generate({ tpm_limit: 30 });
  const first = await chat(key, 'priced-claude', 'Hello!', { max_tokens: 5 });
  assert.equal(first.status, 200, first.text);
  assert.equal(first.headers.get('x-ratelimit-limit-tokens'), '30');
  const used = first.json.usage.total_tokens;
  const second = await chat(key, 'priced-claude', 'Hello!', { max_tokens: 5 });
  assert.equal(second.status, 200, second.text);
  // The remaining tokens reflect the real usage of both, not their holds.
  const remaining = Number(second.headers.get('x-ratelimit-remaining-tokens'));
  assert.ok(remaining >= 30 - used - 13 - 1, `remaining ${remaining}`);
  // A request that cannot fit the limit at all is refused with a 429 saying so.
  const huge = await chat(key, 'priced-claude', 'Hello!', { max_tokens: 500 });
  assert.equal(huge.status, 429);
  assert.equal(huge.json.error.type, 'rate_limit_exceeded');
});

test('model_tpm_limit admits on the estimate too', async () => {
  const key = await generate({ model_tpm_limit: { 'priced-claude': 30 } });
  assert.equal((await chat(key, 'priced-claude', 'Hello!', { max_tokens: 5 })).status, 200);
});

test('max_budget 0.1: 40 racing "Hello!"s then one at a time: spend ≤ 0.1 and within one bound of it', async () => {
  const key = await generate({ max_budget: 0.1 });
  const body = { max_tokens: 10 };
  const first = await chat(key, 'priced-claude', 'Hello!', body);
  assert.equal(first.status, 200, 'the first "Hello!" fits a 0.1 budget');
  const racing = await Promise.all(Array.from({ length: 40 }, () => chat(key, 'priced-claude', 'Hello!', body)));
  for (const r of racing) {
    assert.ok([200, 400].includes(r.status), r.text);
    if (r.status === 400) assert.equal(r.json.error.type, 'budget_exceeded');
  }
  let refused = false;
  for (let i = 0; i < 20 && !refused; i++) {
    const r = await chat(key, 'priced-claude', 'Hello!', body);
    refused = r.status === 400;
    if (refused) assert.equal(r.json.error.type, 'budget_exceeded');
  }
  assert.ok(refused, 'the budget ends');
  const spend = await spendOf(key);
  const boundUsd = claudeBoundTokens('Hello!') * INPUT_USD + 10 * OUTPUT_USD;
  assert.ok(spend <= 0.1 + 1e-12, `spend ${spend} passed the budget`);
  assert.ok(spend >= 0.1 - boundUsd - 1e-12, `spend ${spend}: more than one request's bound (${boundUsd}) left unspendable`);
});

test('a budget with a short budget_duration gets requests through in every period', async () => {
  // One hold is 0.031 + 0.02 = 0.051: one call fits in 0.055; once it has cost anything over
  // 0.004, a second does not until the period ends.
  const key = await generate({ max_budget: 0.055, budget_duration: '2s' });
  const first = await chat(key, 'priced-claude', 'Hello!', { max_tokens: 10 });
  assert.equal(first.status, 200);
  assert.ok(Number(first.headers.get('x-litellm-response-cost')) > 0.004);
  assert.equal((await chat(key, 'priced-claude', 'Hello!', { max_tokens: 10 })).status, 400);
  await eventually(async () => (await chat(key, 'priced-claude', 'Hello!', { max_tokens: 10 })).status === 200, 8000, 'a new period');
});

test('n multiplies the output hold, and an imposed max_tokens is shared among the choices', async () => {
  const key = await generate({ max_budget: 0.1 });
  // 0.031 + 5 × 10 × 0.002 = 0.131 > 0.1; one choice fits.
  const five = await chat(key, 'priced-claude', 'Hello!', { max_tokens: 10, n: 5 });
  assert.equal(five.status, 400);
  assert.equal(five.json.error.type, 'budget_exceeded');
  assert.equal((await chat(key, 'priced-claude', 'Hello!', { max_tokens: 10, n: 1 })).status, 200);

  const imposed = await generate({ max_budget: 0.1 });
  gw.fake.reset();
  assert.equal((await chat(imposed, 'priced-claude', 'Hello!', { n: 2 })).status, 200);
  // (0.1 − 0.031) / 0.002 = 34 tokens in all, 17 for each of the two choices.
  assert.equal(gw.fake.requests[0].body.max_tokens, 17);
});

test('no arithmetic escapes a limit: max_tokens 2^64−1 and a huge n are refused, never wrapped', async () => {
  const limited = await generate({ tpm_limit: 1000 });
  const budgeted = await generate({ max_budget: 0.5 });
  const huge = (key, extra) =>
    raw(gw, '/v1/chat/completions', {
      key,
      // Sent as text: JSON.stringify would round 2^64−1 to a float.
      body: `{"model":"priced-claude","messages":[{"role":"user","content":"Hello!"}],${extra}}`,
      headers: { 'content-type': 'application/json' },
    });
  const tpm = await huge(limited, '"max_tokens":18446744073709551615');
  assert.equal(tpm.status, 429, tpm.text);
  const budget = await huge(budgeted, '"max_tokens":18446744073709551615');
  assert.equal(budget.status, 400, budget.text);
  assert.equal(budget.json.error.type, 'budget_exceeded');
  const choices = await huge(budgeted, '"max_tokens":10,"n":9223372036854775807');
  assert.equal(choices.status, 400, choices.text);
  assert.equal(choices.json.error.type, 'budget_exceeded');
  assert.equal(await spendOf(budgeted), 0);
});

test('fallbacks go only to groups the key may use, under their own per-model limits', async () => {
  gw.fake.reset();
  gw.fake.override('primary-a', '[fake:error=503]');
  try {
    const narrow = await generate({ models: ['primary'] });
    const refused = await chat(narrow, 'primary', 'scoped');
    assert.equal(refused.status, 503, refused.text);
    assert.equal(count('backup-a'), 0, 'never sent to a group outside the key');
    assert.equal(refused.headers.get('x-litellm-attempted-fallbacks'), '0');

    const wide = await generate({ models: ['primary', 'backup'], model_rpm_limit: { backup: 1 } });
    const served = await chat(wide, 'primary', 'scoped');
    assert.equal(served.status, 200, served.text);
    assert.equal(served.json.model, 'backup');
    assert.equal(count('backup-a'), 1);
    // backup's own limit (1 a minute) applies to a request that reaches it by fallback.
    const limited = await chat(wide, 'primary', 'scoped again');
    assert.equal(limited.status, 429, limited.text);
    assert.equal(count('backup-a'), 1);
  } finally {
    gw.fake.override('primary-a', null);
  }
});

test('each attempt is translated for the family that serves it', async () => {
  gw.fake.reset();
  gw.fake.override('claude-family-a', '[fake:error=503]');
  gw.fake.override('gpt-family-b', null);
  const thinking = { thinking: { type: 'enabled', budget_tokens: 2048 }, max_tokens: 4000 };
  let res = await chat(undefined, 'claude-then-gpt', 'think first', thinking);
  assert.equal(res.status, 200, res.text);
  const sent = (endpoint) => gw.fake.requests.filter((r) => r.endpoint === endpoint).map((r) => r.body);
  assert.ok(sent('claude-family-a').length > 0);
  for (const body of sent('claude-family-a')) assert.deepEqual(body.thinking, thinking.thinking);
  const [gpt] = sent('gpt-family-b');
  assert.equal(gpt.thinking, undefined, 'no `thinking` reaches a GPT model');
  assert.equal(gpt.reasoning_effort, 'medium');

  gw.fake.reset();
  gw.fake.override('gpt-family-b', '[fake:error=503]');
  res = await chat(undefined, 'gpt-then-claude', 'think first', { reasoning_effort: 'low' });
  assert.equal(res.status, 200, res.text);
  for (const body of sent('gpt-family-b')) assert.equal(body.reasoning_effort, 'low');
  const [claude] = sent('claude-family-a');
  assert.equal(claude.reasoning_effort, undefined, 'no `reasoning_effort` reaches Claude');
  assert.equal(claude.thinking.budget_tokens, 1024);
  assert.ok(claude.max_tokens > 1024);
  gw.fake.reset();
});

test('a key with a budget is refused a model the gateway cannot price, naming what to set', async () => {
  const budgeted = await generate({ max_budget: 1 });
  const res = await chat(budgeted, 'balanced', 'what does this cost');
  assert.equal(res.status, 400);
  assert.equal(res.json.error.param, 'model');
  assert.match(res.json.error.message, /balanced/);
  assert.match(res.json.error.message, /input_cost_per_token/);
  // Priced models work, and keys without a budget may use it.
  assert.equal((await chat(budgeted, 'priced-claude', 'Hello!', { max_tokens: 5 })).status, 200);
  assert.equal((await chat(await generate({}), 'balanced', 'free')).status, 200);
});

test('narrowing a limited key\'s models takes effect at once in another isolate', async () => {
  const two = await startTwoIsolates();
  try {
    const made = await two.send('a', '/key/generate', { body: { rpm_limit: 100 } });
    assert.equal(made.status, 200, made.text);
    const key = made.json.key;
    const ask = (which, model) =>
      two.send(which, '/v1/chat/completions', { key, body: { model, messages: userMessage('hi') } });
    // Isolate b reads the key (and caches it) while it may use every model.
    assert.equal((await ask('b', 'databricks-gpt-5-1')).status, 200);
    const updated = await two.send('a', '/key/update', { body: { key, models: ['databricks-claude-sonnet-4-5'] } });
    assert.equal(updated.status, 200, updated.text);
    const refused = await ask('b', 'databricks-gpt-5-1');
    assert.equal(refused.status, 401, refused.text);
    assert.equal(refused.json.error.type, 'key_model_access_denied');
    assert.equal((await ask('b', 'databricks-claude-sonnet-4-5')).status, 200);
  } finally {
    await two.close();
  }
});
