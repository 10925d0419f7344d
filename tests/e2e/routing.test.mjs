// Load balancing, retries, cooldowns, fallbacks and health, through the built worker under
// workerd against one fake Databricks whose endpoints the tests make fail one by one.

import { test, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { startGateway, raw, userMessage, eventually, rawStream as rawStreamOf } from '../support/gateway.mjs';

let gw;
before(async () => {
  gw = await startGateway();
});
after(async () => {
  await gw?.close();
});
beforeEach(() => gw.fake.reset());

const ask = (model, content = 'route me', extra = {}) =>
  raw(gw, '/v1/chat/completions', { body: { model, messages: userMessage(content), ...extra } });
const count = (endpoint) => gw.fake.countsByEndpoint[endpoint] ?? 0;
// The test config cools a deployment down for 2 s.
const COOLDOWN_MS = 2000;

const rawStream = (model, content) => rawStreamOf(gw, model, content);

test('simple-shuffle spreads a group by weight (3:1) within statistical bounds', async () => {
  const N = 200;
  for (let i = 0; i < N; i += 20) {
    const batch = await Promise.all(Array.from({ length: 20 }, (_, j) => ask('balanced', `r${i + j}`)));
    assert.ok(batch.every((r) => r.status === 200));
  }
  const a = count('balanced-a');
  assert.equal(a + count('balanced-b'), N);
  // Binomial(200, 0.75): mean 150, sd 6.1; ±4.5 sd.
  assert.ok(a >= 122 && a <= 178, `balanced-a got ${a} of ${N}`);
  // Every answer says which deployment served it.
  const one = await ask('balanced');
  assert.match(one.headers.get('x-litellm-model-id'), /^balanced-[ab]$/);
  assert.equal(one.json.model, 'balanced');
});

test('a failing deployment is retried away from, cooled down, reported, and used again after', async () => {
  gw.fake.override('flaky-a', '[fake:error=500]');
  // Every request succeeds: those that land on flaky-a are retried on flaky-b. allowed_fails is
  // 1, so flaky-a's second failure in a minute cools it down, and it gets no more traffic.
  const results = [];
  let afterCooling = 0;
  let info;
  for (let i = 0; i < 60 && afterCooling < 15; i++) {
    const cooled = count('flaky-a') >= 2;
    // /model/info reports the cooldown while it lasts (2 s): asked as soon as it began, not after
    // the 15 requests below, which a busy machine can stretch past it.
    if (cooled && !info) {
      await eventually(async () => {
        info = await raw(gw, '/model/info', { method: 'GET' });
        const a = info.json.data.find((d) => d.model_info.id === 'flaky-a');
        return Date.parse(a.model_info.cooldown_until) > Date.now();
      }, COOLDOWN_MS, 'cooldown shown by /model/info');
    }
    results.push(await ask('flaky', `try ${i}`));
    if (cooled) afterCooling++;
  }
  assert.equal(afterCooling, 15, 'flaky-a failed twice within 45 requests');
  assert.ok(results.every((r) => r.status === 200));
  assert.ok(results.every((r) => r.headers.get('x-litellm-model-id') === 'flaky-b'));
  assert.ok(results.some((r) => r.headers.get('x-litellm-attempted-retries') === '1'), 'a retry happened');
  assert.equal(count('flaky-a'), 2, 'no traffic on flaky-a while it cools down');

  assert.equal(JSON.stringify(info.json).includes('dapi'), false, 'no token in /model/info');

  const health = await raw(gw, '/health', { method: 'GET' });
  assert.equal(health.status, 200);
  const sick = health.json.unhealthy_endpoints.find((e) => e.model_id === 'flaky-a');
  assert.match(sick.error, /^Databricks returned 500/);
  assert.ok(health.json.healthy_endpoints.some((e) => e.model_id === 'flaky-b'));
  assert.equal(JSON.stringify(health.json).includes('dapi'), false, 'no token in /health');

  // Recovered and past its cooldown: flaky-a takes traffic again.
  gw.fake.override('flaky-a', null);
  await new Promise((r) => setTimeout(r, COOLDOWN_MS + 200));
  const before = count('flaky-a');
  await eventually(async () => (await ask('flaky', 'back?')).status === 200 && count('flaky-a') > before, 5000, 'traffic on flaky-a');
});

test('with every deployment cooling down: 429 "No deployments available" with retry-after', async () => {
  gw.fake.override('flaky-a', '[fake:error=429]');
  gw.fake.override('flaky-b', '[fake:error=429]');
  const first = await ask('flaky');
  assert.equal(first.status, 429);
  const second = await ask('flaky');
  assert.equal(second.status, 429);
  assert.match(second.json.error.message, /^No deployments available for selected model/);
  const retryAfter = Number(second.headers.get('retry-after'));
  assert.ok(retryAfter >= 1 && retryAfter <= 2, `retry-after ${retryAfter}`);
  assert.equal(count('flaky-a') + count('flaky-b'), 2, 'the second request reached no deployment');
  gw.fake.override('flaky-a', null);
  gw.fake.override('flaky-b', null);
  await new Promise((r) => setTimeout(r, COOLDOWN_MS + 200));
  assert.equal((await ask('flaky')).status, 200);
});

test('when a group fails, its fallback answers, and the headers say so', async () => {
  gw.fake.override('primary-a', '[fake:error=503]');
  const res = await ask('primary', 'please answer');
  assert.equal(res.status, 200, res.text);
  assert.equal(res.json.model, 'backup');
  assert.equal(res.headers.get('x-litellm-attempted-fallbacks'), '1');
  assert.equal(res.headers.get('x-litellm-attempted-retries'), '2');
  assert.equal(res.headers.get('x-litellm-model-group'), 'primary');
  assert.equal(count('primary-a'), 3, 'the first attempt and two retries');
  assert.equal(count('backup-a'), 1);
  // A request error is not retried nor failed over.
  gw.fake.override('primary-a', '[fake:error=400]');
  const bad = await ask('primary');
  assert.equal(bad.status, 400);
  assert.equal(count('backup-a'), 1);
});

test('order: the first deployment takes all traffic while healthy', async () => {
  for (let i = 0; i < 8; i++) assert.equal((await ask('ordered', `o${i}`)).status, 200);
  assert.equal(count('ordered-first'), 8);
  assert.equal(count('ordered-second'), 0);
});

test('a stream that fails before its first byte is retried; one that fails after ends cleanly', async () => {
  gw.fake.override('ordered-first', '[fake:reset]');
  const retried = await rawStream('ordered', 'stream please');
  assert.equal(retried.res.status, 200);
  assert.equal(retried.res.headers.get('x-litellm-model-id'), 'ordered-second');
  assert.equal(retried.events.at(-1), '[DONE]');
  assert.ok(retried.events.every((e) => !e.includes('"error"')));
  await new Promise((r) => setTimeout(r, COOLDOWN_MS + 200));
  gw.fake.reset();

  gw.fake.override('ordered-first', '[fake:reset-mid] [fake:chunks=5]');
  const broken = await rawStream('ordered', 'stream again');
  assert.equal(broken.res.status, 200);
  assert.equal(broken.events.at(-1), '[DONE]');
  assert.match(JSON.parse(broken.events.at(-2)).error.message, /stream broke/);
  assert.equal(count('ordered-second'), 0, 'not retried once bytes reached the client');
});

test('a request too long for a context window goes to its context-window fallback', async () => {
  const short = await ask('small-context', 'short');
  assert.equal(short.status, 200);
  assert.equal(count('small-context'), 1);
  const long = await ask('small-context', 'word '.repeat(200));
  assert.equal(long.status, 200, long.text);
  assert.equal(long.json.model, 'big-context');
  assert.equal(long.headers.get('x-litellm-attempted-fallbacks'), '1');
  assert.equal(count('small-context'), 1, 'the small deployment was skipped, not called');
  assert.equal(count('big-context'), 1);
});

test('/health needs the master key; /model/info lists deployments without secrets', async () => {
  const key = (await raw(gw, '/key/generate', { body: { models: ['balanced'] } })).json.key;
  assert.equal((await raw(gw, '/health', { method: 'GET', key })).status, 403);
  const info = await raw(gw, '/model/info', { method: 'GET', key });
  assert.equal(info.status, 200);
  assert.deepEqual(info.json.data.map((d) => d.model_info.id).sort(), ['balanced-a', 'balanced-b']);
  const a = info.json.data.find((d) => d.model_info.id === 'balanced-a');
  assert.equal(a.litellm_params.model, 'databricks/balanced-a');
  assert.equal(a.litellm_params.weight, 3);
  assert.equal(a.litellm_params.api_base, gw.fake.url);
  assert.equal('api_key' in a.litellm_params, false);
});
