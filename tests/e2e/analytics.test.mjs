// Workers Analytics Engine (src/runtime/reports.rs, the layout in src/analytics.rs): one data point
// per request when an `ANALYTICS` dataset is bound, none without one.
//
// Miniflare binds a real `analyticsEngineDatasets` entry, but its `writeDataPoint` keeps nothing.
// So the first test runs with that binding (the worker calls it without failing), and the second
// binds `ANALYTICS` to a wrapped binding that logs each point it is given, to check what the
// worker writes.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { startGateway, raw, userMessage, eventually } from '../support/gateway.mjs';

const GPT = 'databricks-gpt-5-1';
const hash = (key) => createHash('sha256').update(key).digest('hex');

test('with Miniflare\'s Analytics Engine binding every request is served and nothing fails', async () => {
  const gw = await startGateway({ worker: { analyticsEngineDatasets: { ANALYTICS: { dataset: 'gateway_requests' } } } });
  try {
    const answer = await gw.client().chat.completions.create({ model: GPT, messages: userMessage('counted') });
    assert.ok(answer.choices[0].message.content);
    const failed = await raw(gw, '/v1/chat/completions', { body: { model: 'missing-endpoint', messages: userMessage('x') } });
    assert.equal(failed.status, 404);
    await new Promise((r) => setTimeout(r, 200));
    assert.deepEqual(gw.logs.filter((l) => /Analytics Engine/.test(l)), []);
  } finally {
    await gw.close();
  }
});

const RECORDER = {
  name: 'analytics-recorder',
  modules: true,
  script: `export default function () {
    return { writeDataPoint(point) { console.log('DATA_POINT ' + JSON.stringify(point)); } };
  }`,
};

test('one data point per request: key hash, team, model group, deployment, status, tokens, cost, latency', async () => {
  const gw = await startGateway({
    worker: { wrappedBindings: { ANALYTICS: { scriptName: 'analytics-recorder' } } },
    extraWorkers: [RECORDER],
  });
  try {
    assert.equal((await raw(gw, '/team/new', { body: { team_id: 'team-ae' } })).status, 200);
    const key = (await raw(gw, '/key/generate', { body: { team_id: 'team-ae', key_alias: 'ae' } })).json.key;
    const { data, response } = await gw
      .client({ apiKey: key })
      .chat.completions.create({ model: GPT, user: 'erin', messages: userMessage('point me') })
      .withResponse();
    const failed = await raw(gw, '/v1/chat/completions', { key, body: { model: 'missing-endpoint', messages: userMessage('x') } });
    assert.equal(failed.status, 404);
    const points = () =>
      gw.logs.filter((l) => l.startsWith('DATA_POINT ')).map((l) => JSON.parse(l.slice('DATA_POINT '.length)));
    await eventually(() => points().length === 2, 3000, 'two data points');
    const [ok, bad] = points();
    assert.deepEqual(ok.indexes, [hash(key)]);
    assert.deepEqual(ok.blobs, [hash(key), 'team-ae', GPT, 'gpt51-primary', 'success', 'erin', 'ae', '']);
    const [prompt, completion, cost, latency, status] = ok.doubles;
    assert.deepEqual([prompt, completion, status], [data.usage.prompt_tokens, data.usage.completion_tokens, 200]);
    assert.equal(cost, Number(response.headers.get('x-litellm-response-cost')));
    assert.ok(latency >= 0 && latency < 10_000, `latency ${latency} ms`);
    assert.deepEqual([bad.blobs[2], bad.blobs[4], bad.doubles[4], bad.doubles[2]], ['missing-endpoint', 'failure', 404, 0]);
  } finally {
    await gw.close();
  }
});
