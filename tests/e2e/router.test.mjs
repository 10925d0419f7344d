// Router settings that would change every other test, in their own config
// (tests/fixtures/router.yaml, which build-test embeds too): default fallbacks, the overall
// timeout across attempts, usage-based-routing-v2, and cooldowns shared by two isolates.

import { test, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { startGateway, raw, userMessage } from '../support/gateway.mjs';
import { startTwoIsolates } from '../support/isolates.mjs';

const CONFIG = 'router';

let gw;
before(async () => {
  gw = await startGateway({ config: CONFIG });
});
after(async () => {
  await gw?.close();
});
beforeEach(() => gw.fake.reset());

const chat = (model, content = 'route me') => raw(gw, '/v1/chat/completions', { body: { model, messages: userMessage(content) } });
const count = (endpoint) => gw.fake.countsByEndpoint[endpoint] ?? 0;

test('default_fallbacks answer for a group without fallbacks of its own', async () => {
  gw.fake.override('lonely-a', '[fake:error=503]');
  const res = await chat('lonely');
  assert.equal(res.status, 200, res.text);
  assert.equal(res.json.model, 'safety-net');
  assert.equal(count('lonely-a'), 4, 'the first attempt and num_retries (3)');
  assert.equal(count('safety-net-a'), 1);
  assert.equal(res.headers.get('x-litellm-attempted-fallbacks'), '1');
});

test('router_settings.timeout bounds every attempt together', async () => {
  // Each attempt fails after 1.5 s: the second is cut when the 2 s are used, and no third
  // attempt nor fallback is made.
  gw.fake.override('sluggish-a', '[fake:delay=1500] [fake:error=500]');
  gw.fake.override('sluggish-b', '[fake:delay=1500] [fake:error=500]');
  const res = await chat('sluggish');
  assert.equal(res.status, 504, res.text);
  assert.equal(count('sluggish-a') + count('sluggish-b'), 2);
  assert.equal(count('safety-net-a'), 0);
});

test('usage-based-routing-v2 sends nothing to a deployment past its rpm', async () => {
  for (let i = 0; i < 10; i++) assert.equal((await chat('usage-group', `u${i}`)).status, 200);
  assert.ok(count('usage-small') <= 2, `usage-small got ${count('usage-small')} with rpm 2`);
  assert.equal(count('usage-small') + count('usage-large'), 10);
});

test('a cooldown caused through one isolate steers the other isolate too', async () => {
  const two = await startTwoIsolates({ config: CONFIG });
  try {
    const ask = (which, content) =>
      two.send(which, '/v1/chat/completions', { body: { model: 'shared-cool', messages: userMessage(content) } });
    const heavy = () => two.fake.countsByEndpoint['cool-heavy'] ?? 0;
    // Isolate a meets a 429 on the deployment that takes nearly all traffic: it cools down
    // (60 s), and the request is answered by the other.
    two.fake.override('cool-heavy', '[fake:error=429]');
    for (let i = 0; heavy() === 0 && i < 20; i++) assert.equal((await ask('a', `a${i}`)).status, 200);
    assert.equal(heavy(), 1);
    // The deployment is healthy again, but cooling down: isolate b, which never saw it fail,
    // learns it from the shared health (refreshed within a second) and keeps away.
    two.fake.override('cool-heavy', null);
    two.fake.reset();
    for (let i = 0; i < 20; i++) assert.equal((await ask('b', `b${i}`)).status, 200);
    // Without the shared cooldown, weight 1000:1 would send about all 20 there; the first
    // request may still go before b's copy of the health arrives.
    assert.ok(heavy() <= 1, `cool-heavy got ${heavy()} of 20 from isolate b`);
  } finally {
    await two.close();
  }
});

test('without a master key in the config, every request is refused', async () => {
  const open = await startGateway({ config: 'no_master' });
  try {
    const ask = (key) =>
      raw(open, '/v1/chat/completions', { key, body: { model: 'databricks-gpt-5-1', messages: userMessage('hi') } });
    for (const key of ['sk-anything', 'sk-test-master-4f1c9a', undefined]) {
      const res = await ask(key);
      assert.equal(res.status, 401, res.text);
      assert.match(res.json.error.message, /no master key/);
    }
    assert.equal((await raw(open, '/key/generate', { key: 'sk-anything', body: {} })).status, 401);
    assert.equal(open.fake.requests.length, 0, 'nothing reached Databricks');
    // Liveness still answers: the platform's health checks need no key.
    assert.equal((await raw(open, '/health/liveliness', { method: 'GET', key: null })).status, 200);
  } finally {
    await open.close();
  }
});
