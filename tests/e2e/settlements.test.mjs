// Keys without limits or a budget hold nothing, so their settlements are sent in batches per
// ledger in each isolate, in the background (src/runtime/settlements.rs). These tests hold the
// batches to their promise: every request settled once, with no later traffic to carry it,
// across isolates, and when the client hangs up mid-stream.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startGateway, raw, userMessage, eventually } from '../support/gateway.mjs';
import { startTwoIsolates } from '../support/isolates.mjs';

const MODEL = 'databricks-gpt-5-1';
const PICO = 1e12;

/** Sums x-litellm-response-cost headers exactly, in pico-dollars. */
const pico = (usd) => Math.round(Number(usd) * PICO);

async function spendOf(gateway, key) {
  return (await raw(gateway, `/key/info?key=${key}`, { method: 'GET' })).json.info.spend;
}

async function logRows(gateway, key) {
  return (await raw(gateway, `/spend/logs?api_key=${encodeURIComponent(key)}`, { method: 'GET', key })).json;
}

let gw;
before(async () => {
  gw = await startGateway();
});
after(async () => {
  await gw?.close();
});

test('every call of a key without limits is settled once, with no later traffic to carry it', async () => {
  const { key } = (await raw(gw, '/key/generate', { body: {} })).json;
  const costs = await Promise.all(
    Array.from({ length: 24 }, async (_, i) => {
      const res = await raw(gw, '/v1/chat/completions', { key, body: { model: MODEL, messages: userMessage(`call ${i}`) } });
      assert.equal(res.status, 200, res.text);
      assert.equal(res.headers.get('x-litellm-key-spend'), null, 'nothing waits on this settlement');
      return pico(res.headers.get('x-litellm-response-cost'));
    }),
  );
  const expected = costs.reduce((a, b) => a + b, 0);
  assert.ok(expected > 0);
  await eventually(async () => pico(await spendOf(gw, key)) === expected, 3000, 'the spend of all 24 calls');
  const rows = await logRows(gw, key);
  assert.equal(rows.length, 24, 'one spend log row per call');
  assert.equal(new Set(rows.map((r) => r.request_id)).size, 24);
});

test('two isolates batch on their own and the key ledger counts both', async () => {
  const two = await startTwoIsolates();
  try {
    const { key } = (await two.send('a', '/key/generate', { body: {} })).json;
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        two.send(i % 2 ? 'a' : 'b', '/v1/chat/completions', { key, body: { model: MODEL, messages: userMessage(`both ${i}`) } }),
      ),
    );
    for (const res of results) assert.equal(res.status, 200, res.text);
    const expected = results.reduce((sum, res) => sum + pico(res.headers.get('x-litellm-response-cost')), 0);
    await eventually(
      async () => pico((await two.send('b', `/key/info?key=${key}`, { method: 'GET' })).json.info.spend) === expected,
      3000,
      'the spend of 20 calls over two isolates',
    );
  } finally {
    await two.close();
  }
});

test('a stream whose client hangs up is settled by its pump, in the batch', async () => {
  const { key } = (await raw(gw, '/key/generate', { body: {} })).json;
  const controller = new AbortController();
  const res = await fetch(`${gw.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({
      model: MODEL,
      stream: true,
      messages: userMessage('an answer nobody reads to the end [fake:chunks=20] [fake:spacing=100]'),
    }),
    signal: controller.signal,
  });
  const callId = res.headers.get('x-litellm-call-id');
  await res.body.getReader().read();
  controller.abort();
  await eventually(async () => (await logRows(gw, key)).some((r) => r.call_id === callId), 5000, 'the spend log row');
  const row = (await logRows(gw, key)).find((r) => r.call_id === callId);
  assert.equal(row.stream, true);
  assert.ok(row.completion_tokens >= 1 && row.completion_tokens < 20, `completion_tokens ${row.completion_tokens}`);
  assert.equal(pico(await spendOf(gw, key)), pico(row.spend));
});

test('a settlement batch delivered twice to a ledger without limits counts once', async () => {
  // The sender retries a batch whose answer was lost; the ledger (here one no key has touched,
  // so no limits and no window) must recognise what it already settled.
  const namespace = await gw.mf.getDurableObjectNamespace('LEDGER');
  const ledger = namespace.get(namespace.idFromName('key:retried-batch'));
  const settlement = { id: 'retried-call-1', prompt_tokens: 7, completion_tokens: 3, cost: 1234567, limits: {} };
  const batch = JSON.stringify([{ settlement, row: null }]);
  const send = async () =>
    (await (await ledger.fetch('https://object/settle-batch', { method: 'POST', body: batch })).json())[0];
  const first = await send();
  assert.equal(first.duplicate, false);
  assert.equal(BigInt(first.spend), 1234567n);
  const again = await send();
  assert.equal(again.duplicate, true, 'the batch sent again is recognised');
  assert.equal(BigInt(again.spend), 1234567n, 'and charges nothing more');
  const info = await (await ledger.fetch('https://object/info', { method: 'POST', body: JSON.stringify({ limits: {} }) })).json();
  assert.equal(BigInt(info.spend), 1234567n);
});
