// Behaviours the README promises that no other file tests, each checked the way a user would
// notice it: what Databricks received (the fake's record), what the client got, what the log
// says. Each test makes its own keys and resets the fake.

import { test, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { startGateway, raw, userMessage, eventually } from '../support/gateway.mjs';
import { startTwoIsolates } from '../support/isolates.mjs';

const OAUTH = { clientId: 'sp-client-7c1e', clientSecret: 'sp-secret-value-93d2' };

let gw;
before(async () => {
  gw = await startGateway({
    fake: { oauth: OAUTH },
    bindings: { TEST_CLIENT_ID: OAUTH.clientId, TEST_CLIENT_SECRET: OAUTH.clientSecret, TEST_WRONG_CLIENT_SECRET: 'x' },
  });
});
after(async () => {
  await gw?.close();
});
beforeEach(() => gw.fake.reset());

const chat = (model, content = 'hello', extra = {}, key = undefined) =>
  raw(gw, '/v1/chat/completions', { key, body: { model, messages: userMessage(content), ...extra } });
const count = (endpoint) => gw.fake.countsByEndpoint[endpoint] ?? 0;
const generate = async (fields) => (await raw(gw, '/key/generate', { body: fields })).json.key;
/** The request log line of the call with this id, once the worker wrote it. */
async function logLine(callId) {
  let line;
  await eventually(() => (line = gw.requestLogs().find((l) => l.call_id === callId)), 3000, `log line ${callId}`);
  return line;
}

test('max_completion_tokens wins over max_tokens, and reaches Databricks as max_tokens', async () => {
  const res = await chat('databricks-gpt-5-1', 'hello', { max_tokens: 50, max_completion_tokens: 7 });
  assert.equal(res.status, 200, res.text);
  const [sent] = gw.fake.requests;
  assert.equal(sent.body.max_tokens, 7);
  assert.equal('max_completion_tokens' in sent.body, false);
});

test('a model without a price is charged 0, and the log line says so', async () => {
  const res = await chat('balanced');
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('x-litellm-response-cost'), '0.0');
  const line = await logLine(res.headers.get('x-litellm-call-id'));
  assert.equal(line.price, 'unknown: charged 0');
  assert.equal(line.cost, '0.0');
});

test('crossing soft_budget writes one soft_budget_crossed line per period', async () => {
  const key = await generate({ soft_budget: 0.00001, max_budget: 10 });
  for (let i = 0; i < 3; i++) assert.equal((await chat('databricks-gpt-5-1', `spend ${i}`, {}, key)).status, 200);
  const crossed = () => gw.logs.filter((l) => l.includes('"event":"soft_budget_crossed"'));
  await eventually(() => crossed().length >= 1, 3000, 'the soft budget line');
  // Let any later settlement land, then count: once for the period, not once per call.
  assert.equal((await chat('databricks-gpt-5-1', 'one more', {}, key)).status, 200);
  assert.equal(crossed().length, 1);
  assert.equal(crossed()[0].includes(key), false, 'no secret in the line');
});

test('model_rpm_limit holds per model end to end', async () => {
  const key = await generate({ model_rpm_limit: { 'priced-claude': 2 } });
  assert.equal((await chat('priced-claude', 'a', { max_tokens: 5 }, key)).status, 200);
  assert.equal((await chat('priced-claude', 'b', { max_tokens: 5 }, key)).status, 200);
  const third = await chat('priced-claude', 'c', { max_tokens: 5 }, key);
  assert.equal(third.status, 429);
  assert.equal(third.headers.get('x-ratelimit-limit-requests'), '2');
  assert.equal((await chat('databricks-gpt-5-1', 'other model', {}, key)).status, 200);
  assert.equal(count('priced-claude-endpoint'), 2);
});

test('a deployment tpm, enforced, admits on the estimate and refuses naming the deployment', async () => {
  const first = await chat('tpm-deployment', 'Hello!', { max_tokens: 5 });
  assert.equal(first.status, 200, 'about 13 tokens fit a tpm of 30');
  let refused;
  for (let i = 0; i < 10 && !refused; i++) {
    const r = await chat('tpm-deployment', 'Hello!', { max_tokens: 5 });
    if (r.status === 429) refused = r;
    else assert.equal(r.status, 200);
  }
  assert.ok(refused, 'the deployment refuses once its minute is used');
  assert.match(refused.json.error.message, /tpm-deployment-a/);
});

test("a limited key's slot is released when its request times out", async () => {
  const key = await generate({ max_parallel_requests: 1 });
  const slow = await chat('slow-model', 'wait [fake:delay=3000]', {}, key);
  assert.equal(slow.status, 504);
  const next = await chat('priced-claude', 'next', { max_tokens: 5 }, key);
  assert.equal(next.status, 200, 'the slot came back with the timeout');
});

// One deployment, no fallback: how many times Databricks is asked for each status.
const ATTEMPTS = [
  [400, 1],
  [401, 1], // cooled down and not tried again by this request; a group of one has no other
  [403, 1],
  [404, 1],
  [409, 1],
  [422, 1],
  [408, 3], // the first attempt and num_retries (2) retries
  [500, 3],
  [503, 3],
];
for (const [status, attempts] of ATTEMPTS) {
  test(`a Databricks ${status} is tried ${attempts} time(s)`, async () => {
    gw.fake.override('backup-a', `[fake:error=${status}]`);
    const res = await chat('backup', `status ${status}`);
    assert.equal(res.status, status, res.text);
    assert.equal(count('backup-a'), attempts);
    assert.equal(res.headers.get('x-litellm-attempted-retries'), String(attempts - 1));
  });
}

// Deployments of a group of two: which failures cool one down at once (429, 401, 404, 408),
// and which only past allowed_fails (a 500 once is not enough).
for (const [status, coolsAtOnce] of [[401, true], [404, true], [408, true], [500, false]]) {
  test(`a ${status} from a deployment ${coolsAtOnce ? 'cools it down at once' : 'does not cool it down on its own'}`, async () => {
    // `ordered` sends everything to ordered-first while it is available.
    gw.fake.override('ordered-first', `[fake:error=${status}]`);
    const first = await chat('ordered', `fail with ${status}`);
    assert.equal(first.status, 200, first.text);
    assert.equal(first.headers.get('x-litellm-model-id'), 'ordered-second');
    assert.equal(count('ordered-first'), 1);
    gw.fake.override('ordered-first', null);
    const next = await chat('ordered', 'and now?');
    assert.equal(next.status, 200);
    assert.equal(next.headers.get('x-litellm-model-id'), coolsAtOnce ? 'ordered-second' : 'ordered-first');
    // Leave the group as found: ordered-first back in use once its cooldown (2 s) ends.
    await eventually(async () => (await chat('ordered', 'back?')).headers.get('x-litellm-model-id') === 'ordered-first', 5000, 'ordered-first again');
  });
}

test('a 429 is retried after its retry-after, capped at 10 s', async () => {
  gw.fake.override('backup-a', '[fake:error=429] [fake:retry-after=30]');
  const res = await chat('backup', 'patience');
  assert.equal(res.status, 429);
  const times = gw.fake.requests.filter((r) => r.endpoint === 'backup-a').map((r) => r.receivedAt);
  assert.equal(times.length, 3);
  for (let i = 1; i < times.length; i++) {
    const gap = times[i] - times[i - 1];
    assert.ok(gap >= 9_900 && gap < 12_000, `gap ${gap} ms between attempts`);
  }
});

test("Databricks' own \"too long\" error (a JSON string message) sends the request to its context-window fallback", async () => {
  gw.fake.override('small-context', '[fake:too-long]');
  const res = await chat('small-context', 'short enough for the pre-call check');
  assert.equal(res.status, 200, res.text);
  assert.equal(res.json.model, 'big-context');
  assert.equal(count('small-context'), 1, 'not retried');
  assert.equal(count('big-context'), 1);
  assert.equal(res.headers.get('x-litellm-attempted-fallbacks'), '1');
});

test('/health checks chat, embedding and completion models, each with its own call', async () => {
  const res = await raw(gw, '/health', { method: 'GET' });
  assert.equal(res.status, 200, res.text);
  const path = (endpoint) => gw.fake.requests.find((r) => r.endpoint === endpoint)?.path;
  assert.match(path('databricks-gte-large-en'), /\/embeddings$/);
  assert.match(path('legacy-completions'), /\/completions$/);
  assert.match(path('databricks-gpt-5-1'), /\/chat\/completions$/);
  const healthy = res.json.healthy_endpoints.map((e) => e.model_name ?? e.model);
  assert.ok(res.json.healthy_count > 0 && healthy.length === res.json.healthy_count);
});

test('an OAuth token Databricks refuses with 403 is replaced once, and the request succeeds', async () => {
  assert.equal((await chat('oauth-model', 'first')).status, 200);
  const issued = gw.fake.tokensIssued;
  gw.fake.revokeTokens();
  const res = await chat('oauth-model', 'after revocation');
  assert.equal(res.status, 200, res.text);
  assert.equal(gw.fake.tokensIssued, issued + 1);
  assert.equal(count('databricks-gpt-5-1'), 3, 'the first call, the refused one, and its retry');
});

test('/spend/logs caps its limit at 1000 and honours a smaller one', async () => {
  const key = await generate({});
  for (let i = 0; i < 3; i++) assert.equal((await chat('databricks-gpt-5-1', `log ${i}`, {}, key)).status, 200);
  const logs = (q) => raw(gw, `/spend/logs?api_key=${key}${q}`, { method: 'GET' });
  await eventually(async () => (await logs('')).json.length === 3, 3000, 'three rows');
  assert.equal((await logs('&limit=2')).json.length, 2);
  const over = await logs('&limit=1001');
  assert.equal(over.status, 400);
  assert.equal(over.json.error.param, 'limit');
});

test('across two isolates: a limit is exact, and a block through one is refused by the other at once', async () => {
  const two = await startTwoIsolates();
  try {
    const key = (await two.send('a', '/key/generate', { body: { rpm_limit: 4 } })).json.key;
    const ask = (which, content) =>
      two.send(which, '/v1/chat/completions', { key, body: { model: 'databricks-gpt-5-1', messages: userMessage(content) } });
    const results = await Promise.all(Array.from({ length: 12 }, (_, i) => ask(i % 2 ? 'a' : 'b', `r${i}`)));
    assert.equal(results.filter((r) => r.status === 200).length, 4);
    assert.equal(results.filter((r) => r.status === 429).length, 8);

    const other = (await two.send('a', '/key/generate', { body: { max_budget: 1 } })).json.key;
    const use = (which) =>
      two.send(which, '/v1/chat/completions', { key: other, body: { model: 'databricks-gpt-5-1', messages: userMessage('x') } });
    assert.equal((await use('b')).status, 200, 'isolate b now caches the key');
    assert.equal((await two.send('a', '/key/block', { body: { key: other } })).status, 200);
    const refused = await use('b');
    assert.equal(refused.status, 401);
    assert.equal(refused.json.error.type, 'authentication_error');
  } finally {
    await two.close();
  }
});
