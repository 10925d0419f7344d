// Rate limits, budgets, cost and spend logs, through the built worker under workerd with
// its real Durable Object (SQLite) storage, under concurrency.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
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
const usd = (pico) => Number(pico) / 1e12;

async function generate(fields) {
  const res = await raw(gw, '/key/generate', { body: fields });
  assert.equal(res.status, 200, res.text);
  return res.json;
}

const send = (key, content, extra = {}) =>
  raw(gw, '/v1/chat/completions', { key, body: { model: 'databricks-gpt-5-1', messages: userMessage(content), ...extra } });

const keyInfo = async (key) => (await raw(gw, `/key/info?key=${key}`, { method: 'GET' })).json.info;

/** Reads an SSE stream to its end; returns the last usage seen and whether it ended with [DONE]. */
async function streamOnce(key, content, extra = {}) {
  const res = await fetch(`${gw.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({
      model: 'databricks-gpt-5-1',
      stream: true,
      stream_options: { include_usage: true },
      messages: userMessage(content),
      ...extra,
    }),
  });
  const text = await res.text();
  if (res.status !== 200) return { status: res.status, text };
  const events = text.split('\n\n').filter((e) => e.startsWith('data: ')).map((e) => e.slice(6));
  const usage = events.filter((e) => e !== '[DONE]').map((e) => JSON.parse(e).usage).filter(Boolean).at(-1);
  return { status: 200, usage, done: events.at(-1) === '[DONE]' };
}

test('rpm_limit N: of 3N concurrent requests exactly N pass, the rest get 429 with headers', async () => {
  const N = 4;
  const rpmKey = await generate({ rpm_limit: N });
  const results = await Promise.all(Array.from({ length: 3 * N }, (_, i) => send(rpmKey.key, `burst ${i}`)));
  const ok = results.filter((r) => r.status === 200);
  const limited = results.filter((r) => r.status === 429);
  assert.equal(ok.length, N);
  assert.equal(limited.length, 2 * N);
  for (const r of limited) {
    assert.equal(r.json.error.type, 'rate_limit_exceeded');
    assert.equal(r.json.error.code, '429');
    const retryAfter = Number(r.headers.get('retry-after'));
    assert.ok(retryAfter >= 1 && retryAfter <= 60, `retry-after ${retryAfter}`);
    assert.equal(r.headers.get('x-ratelimit-limit-requests'), String(N));
    assert.equal(r.headers.get('x-ratelimit-remaining-requests'), '0');
  }
  const remaining = ok.map((r) => Number(r.headers.get('x-ratelimit-remaining-requests'))).sort();
  assert.deepEqual(remaining, [0, 1, 2, 3]);
  await assert.rejects(
    gw.client({ apiKey: rpmKey.key }).chat.completions.create({ model: 'databricks-gpt-5-1', messages: userMessage('x') }),
    (e) => e instanceof OpenAI.RateLimitError,
  );
});

test('max_parallel_requests M: never more than M in flight at Databricks; slots come back', async () => {
  const M = 2;
  const { key } = await generate({ max_parallel_requests: M });
  gw.fake.reset();
  const results = await Promise.all(Array.from({ length: 6 }, (_, i) => send(key, `slow ${i} [fake:delay=400]`)));
  assert.ok(gw.fake.maxInFlight <= M, `max in flight at the fake: ${gw.fake.maxInFlight}`);
  assert.equal(results.filter((r) => r.status === 200).length, M);
  for (const r of results.filter((r) => r.status !== 200)) {
    assert.equal(r.status, 429);
    assert.match(r.json.error.message, /parallel/);
  }
  // Both slots were released when the answers came back.
  const again = await Promise.all([send(key, 'again 1'), send(key, 'again 2')]);
  assert.deepEqual(again.map((r) => r.status), [200, 200]);
  // Upstream failures release their slot too.
  assert.equal((await send(key, 'fail [fake:error=500]')).status, 500);
  assert.equal((await send(key, 'fail [fake:error=429]')).status, 429);
  const afterErrors = await Promise.all([send(key, 'ok 1'), send(key, 'ok 2')]);
  assert.deepEqual(afterErrors.map((r) => r.status), [200, 200]);
});

test('max_budget under concurrency: spend never passes it, and equals the sum of the real costs', async () => {
  const budgetUsd = 0.004;
  const { key, token } = await generate({ max_budget: budgetUsd });
  // Each answer echoes 60 words, cut to max_tokens: real usage is close to the reservation.
  const words = Array.from({ length: 60 }, (_, i) => `w${i}`).join(' ');
  const admittedUsage = [];
  let refused = 0;
  for (let wave = 0; wave < 6; wave++) {
    const requests = Array.from({ length: 8 }, (_, i) =>
      i % 2 === 0
        ? send(key, words, { max_tokens: 40 }).then((r) => {
            if (r.status === 200) return r.json.usage;
            assert.equal(r.status, 400, r.text);
            assert.equal(r.json.error.type, 'budget_exceeded');
            assert.match(r.json.error.message, /^Budget has been exceeded! Current cost: [\d.]+, Max budget: 0\.004$/);
            return null;
          })
        : streamOnce(key, words, { max_tokens: 40 }).then((r) => {
            if (r.status === 200) {
              assert.ok(r.done);
              return r.usage;
            }
            assert.equal(r.status, 400, r.text);
            return null;
          }),
    );
    for (const usage of await Promise.all(requests)) {
      if (usage) admittedUsage.push(usage);
      else refused++;
    }
  }
  assert.ok(admittedUsage.length >= 3, `admitted ${admittedUsage.length}`);
  assert.ok(refused > 0, 'the budget refused some requests');
  const expected = admittedUsage.reduce((sum, u) => sum + costPico(u), 0n);
  assert.ok(expected <= BigInt(Math.round(budgetUsd * 1e12)), 'the real costs fit the budget');

  const info = await keyInfo(key);
  assert.ok(info.spend <= budgetUsd, `spend ${info.spend}`);
  assert.ok(Math.abs(info.spend - usd(expected)) < 1e-12, `spend ${info.spend}, expected ${usd(expected)}`);
  // Every admitted request has its row, with its exact cost.
  const logs = (await raw(gw, `/spend/logs?api_key=${token}&limit=1000`, { method: 'GET' })).json;
  assert.equal(logs.length, admittedUsage.length);
  const logged = logs.reduce((sum, row) => sum + BigInt(Math.round(row.spend * 1e12)), 0n);
  assert.equal(logged, expected);
  assert.ok(logs.some((r) => r.stream) && logs.some((r) => !r.stream), 'streamed and plain answers both charged');
});

test('answers carry their cost and the key spend; streams are charged from their own usage', async () => {
  const { key } = await generate({ max_budget: 10 });
  const res = await send(key, 'price me please', { max_tokens: 10 });
  assert.equal(res.status, 200);
  const cost = costPico(res.json.usage);
  assert.equal(res.headers.get('x-litellm-response-cost'), String(usd(cost)).replace(/^(\d+)$/, '$1.0'));
  assert.ok(Math.abs(Number(res.headers.get('x-litellm-key-spend')) - usd(cost)) < 1e-15);
  const streamed = await streamOnce(key, 'and a stream');
  const info = await keyInfo(key);
  assert.ok(Math.abs(info.spend - usd(cost + costPico(streamed.usage))) < 1e-15);
  assert.equal(info.max_budget, 10);
});

test('without max_tokens a budgeted key gets one imposed that the budget can pay for', async () => {
  const { key } = await generate({ max_budget: 0.0005 });
  gw.fake.reset();
  const res = await send(key, 'how many tokens may I use');
  assert.equal(res.status, 200, res.text);
  const sent = gw.fake.requests[0].body.max_tokens;
  // (budget - the prompt's bound) / output price, in whole tokens. The bound for a GPT-family
  // endpoint (README): the text's bytes, one per text, 8 a message and 32 a request.
  const promptBound = Buffer.byteLength('how many tokens may I use') + 1 + 8 + 32;
  const affordable = (500_000_000n - BigInt(promptBound) * INPUT_PICO) / OUTPUT_PICO;
  assert.equal(BigInt(sent), affordable);
  const unlimited = await generate({});
  gw.fake.reset();
  await send(unlimited.key, 'no budget, no cap');
  assert.equal(gw.fake.requests[0].body.max_tokens, undefined);
});

test('tpm_limit reserves the estimate and settles the real usage', async () => {
  const { key } = await generate({ tpm_limit: 1200 });
  // the prompt's estimate + max_tokens 700 ≈ 715 tokens held: two do not fit at once. The
  // upstream takes 300 ms, so the one admitted first still holds its tokens when the other
  // asks, however the two are scheduled.
  const slow = (text) => send(key, `${text} [fake:delay=300]`, { max_tokens: 700 });
  const [a, b] = await Promise.all([slow('one'), slow('two')]);
  assert.deepEqual([a.status, b.status].sort(), [200, 429]);
  const limited = a.status === 429 ? a : b;
  assert.equal(limited.headers.get('x-ratelimit-limit-tokens'), '1200');
  // The admitted one used a handful of tokens, not 700: a third request fits now.
  assert.equal((await send(key, 'three', { max_tokens: 700 })).status, 200);
});

test('a client that hangs up mid-stream is charged for what was produced, and its slot is freed', async () => {
  const { key, token } = await generate({ max_parallel_requests: 1, max_budget: 5 });
  gw.fake.reset();
  const controller = new AbortController();
  const res = await fetch(`${gw.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({
      model: 'databricks-gpt-5-1',
      stream: true,
      messages: userMessage('a b c d e f g h i j k l m n o p [fake:chunks=16] [fake:spacing=150]'),
    }),
    signal: controller.signal,
  });
  const reader = res.body.getReader();
  await reader.read();
  controller.abort();
  await eventually(() => gw.fake.abortedCount === 1, 4000, 'the upstream request cancelled');
  await eventually(async () => (await keyInfo(key)).spend > 0, 4000, 'the spend recorded');
  const [row] = (await raw(gw, `/spend/logs?api_key=${token}`, { method: 'GET' })).json;
  assert.equal(row.stream, true);
  assert.ok(row.completion_tokens >= 1 && row.completion_tokens < 17, `completion tokens ${row.completion_tokens}`);
  assert.equal(row.estimated, false, 'charged from the usage Databricks reported');
  assert.ok(Math.abs((await keyInfo(key)).spend - row.spend) < 1e-15);
  // max_parallel_requests 1: the slot is free again.
  assert.equal((await send(key, 'next')).status, 200);
});

test('budget_duration resets spend when the period ends', async () => {
  const { key } = await generate({ max_budget: 1, budget_duration: '3s' });
  await send(key, 'spend something');
  const before = await keyInfo(key);
  assert.ok(before.spend > 0);
  const resetAt = Date.parse(before.budget_reset_at);
  assert.ok(resetAt > Date.now() && resetAt <= Date.now() + 3000);
  await new Promise((r) => setTimeout(r, resetAt - Date.now() + 200));
  const afterReset = await keyInfo(key);
  assert.equal(afterReset.spend, 0);
  assert.ok(Date.parse(afterReset.budget_reset_at) > resetAt);
});

test('a deployment with enforced rpm refuses past its limit, for every caller', async () => {
  const results = await Promise.all(
    Array.from({ length: 5 }, (_, i) =>
      raw(gw, '/v1/chat/completions', { body: { model: 'limited-deployment', messages: userMessage(`d ${i}`) } }),
    ),
  );
  assert.equal(results.filter((r) => r.status === 200).length, 3);
  for (const r of results.filter((r) => r.status !== 200)) {
    assert.equal(r.status, 429);
    assert.match(r.json.error.message, /^Deployment `[0-9a-f]+` of `limited-deployment`: Rate limit reached/);
    assert.ok(Number(r.headers.get('retry-after')) >= 1);
  }
});

test('a refused deployment releases the key reservation it took', async () => {
  const { key } = await generate({ rpm_limit: 100, max_budget: 1 });
  // limited-deployment is still full from the test above.
  const refused = await raw(gw, '/v1/chat/completions', {
    key,
    body: { model: 'limited-deployment', messages: userMessage('x') },
  });
  assert.equal(refused.status, 429);
  const info = await keyInfo(key);
  assert.equal(info.spend, 0);
  // The refused request holds no budget: a request needing almost all of it still fits.
  assert.equal((await send(key, 'fits', { max_tokens: 90_000 })).status, 200);
});

test('keys without limits are still charged, and /spend/logs filters', async () => {
  const { key, token } = await generate({});
  const res = await send(key, 'free of limits');
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('x-ratelimit-limit-requests'), null);
  await eventually(async () => (await keyInfo(key)).spend > 0, 3000, 'the background settlement');
  const all = (await raw(gw, `/spend/logs?api_key=${key}`, { method: 'GET' })).json;
  assert.equal(all.length, 1);
  assert.equal(all[0].api_key, token);
  assert.equal(all[0].request_id, res.json.id);
  assert.equal(all[0].call_id, res.headers.get('x-litellm-call-id'));
  assert.equal(all[0].model_group, 'databricks-gpt-5-1');
  assert.equal(all[0].status, 'success');
  const byId = (await raw(gw, `/spend/logs?request_id=${res.json.id}`, { method: 'GET' })).json;
  assert.equal(byId.length, 1);
  const tomorrow = new Date(Date.now() + 86_400_000).toISOString().slice(0, 10);
  assert.equal((await raw(gw, `/spend/logs?api_key=${token}&start_date=${tomorrow}`, { method: 'GET' })).json.length, 0);
  const today = new Date().toISOString().slice(0, 10);
  assert.equal((await raw(gw, `/spend/logs?api_key=${token}&end_date=${today}`, { method: 'GET' })).json.length, 1);
  // A key reads its own logs, not another's.
  const own = await raw(gw, '/spend/logs', { method: 'GET', key });
  assert.equal(own.json.length, 1);
  const someoneElse = await generate({});
  const other = await raw(gw, `/spend/logs?api_key=${someoneElse.token}`, { method: 'GET', key });
  assert.equal(other.status, 403);
  assert.equal((await raw(gw, '/spend/logs?start_date=someday', { method: 'GET' })).status, 400);
});

test('blocking a limited key refuses it at once', async () => {
  const { key } = await generate({ rpm_limit: 100 });
  assert.equal((await send(key, 'before')).status, 200);
  await raw(gw, '/key/block', { body: { key } });
  const refused = await send(key, 'after');
  assert.equal(refused.status, 401);
  assert.match(refused.json.error.message, /blocked/);
  await raw(gw, '/key/unblock', { body: { key } });
  assert.equal((await send(key, 'unblocked')).status, 200);
});

test('counters and spend are durable: they survive a restart of the runtime', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'gateway-durable-'));
  try {
    let first = await startGateway({ persistDir: dir });
    const { key } = await raw(first, '/key/generate', { body: { rpm_limit: 2, max_budget: 1 } }).then((r) => r.json);
    const body = { model: 'databricks-gpt-5-1', messages: userMessage('remember me') };
    assert.equal((await raw(first, '/v1/chat/completions', { key, body })).status, 200);
    assert.equal((await raw(first, '/v1/chat/completions', { key, body })).status, 200);
    const spent = (await raw(first, `/key/info?key=${key}`, { method: 'GET' })).json.info.spend;
    assert.ok(spent > 0);
    await first.close();

    const second = await startGateway({ persistDir: dir });
    try {
      const info = (await raw(second, `/key/info?key=${key}`, { method: 'GET' })).json.info;
      assert.equal(info.spend, spent);
      const third = await raw(second, '/v1/chat/completions', { key, body });
      assert.equal(third.status, 429, 'the window of the first instance still counts');
    } finally {
      await second.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
