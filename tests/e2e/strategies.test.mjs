// The routing strategies that learn from traffic, each in its own config (a strategy is a
// router setting, built in with the config; build-test embeds these too).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startGateway, raw, rawStream, userMessage } from '../support/gateway.mjs';

const ask = (gw, model, content) => raw(gw, '/v1/chat/completions', { body: { model, messages: userMessage(content) } });

/** Four clients, each calling `send(content)` one call after another for 2.5 s; returns how
 *  many requests each of busy-group's deployments received. */
async function busyLoad(gw, send) {
  const until = Date.now() + 2500;
  const client = async (c) => {
    for (let i = 0; Date.now() < until; i++) await send(`c${c} r${i}`);
  };
  await Promise.all([0, 1, 2, 3].map(client));
  return { slow: gw.fake.countsByEndpoint['busy-slow'] ?? 0, fast: gw.fake.countsByEndpoint['busy-fast'] ?? 0 };
}

/** The share of requests the slow deployment got. Shuffling gives it about half (each client
 *  alternates at random, whatever the machine's speed); least-busy far less. A share, not a
 *  count, so a slow machine does not fail it. */
function assertMostlyFast({ slow, fast }) {
  assert.ok(slow + fast >= 12, `only ${slow + fast} requests in 2.5 s`);
  assert.ok(slow <= 0.25 * (slow + fast), `slow got ${slow} of ${slow + fast}`);
}

test('least-busy keeps traffic away from a deployment that holds requests', async () => {
  const gw = await startGateway({ config: 'least_busy' });
  try {
    gw.fake.override('busy-slow', '[fake:delay=1000]');
    const { slow, fast } = await busyLoad(gw, async (content) => {
      assert.equal((await ask(gw, 'busy-group', content)).status, 200);
    });
    assertMostlyFast({ slow, fast });
  } finally {
    await gw.close();
  }
});

test('least-busy counts a stream in flight until it ends, not until its first chunk', async () => {
  const gw = await startGateway({ config: 'least_busy' });
  try {
    // The slow deployment answers its first chunk at once but takes 1.2 s to finish a stream.
    gw.fake.override('busy-slow', '[fake:chunks=4] [fake:spacing=400]');
    const { slow, fast } = await busyLoad(gw, async (content) => {
      const { res, events } = await rawStream(gw, 'busy-group', content);
      assert.equal(res.status, 200);
      assert.equal(events.at(-1), '[DONE]');
    });
    assertMostlyFast({ slow, fast });
  } finally {
    await gw.close();
  }
});

test('latency-based routing converges to the fast deployment', async () => {
  const gw = await startGateway({ config: 'latency' });
  try {
    gw.fake.override('lat-slow', '[fake:delay=250]');
    const served = [];
    for (let i = 0; i < 30; i++) {
      const res = await ask(gw, 'latency-group', `r${i}`);
      assert.equal(res.status, 200);
      served.push(res.headers.get('x-litellm-model-id'));
    }
    // Each deployment is measured once at most before the fast one is known.
    assert.ok(served.filter((id) => id === 'lat-slow').length <= 1, served.join(','));
    assert.ok(served.slice(2).every((id) => id === 'lat-fast'), served.join(','));
  } finally {
    await gw.close();
  }
});
