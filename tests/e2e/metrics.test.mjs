// `/metrics` (src/runtime/metrics.rs): Prometheus text for the whole gateway, read by a real
// Prometheus text-format parser (npm parse-prometheus-text-format), its values matching the calls
// made; who may scrape it; and the deployment states from the shared cooldowns.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import parsePrometheusTextFormat from 'parse-prometheus-text-format';
import { startGateway, raw, userMessage, eventually, MASTER_KEY } from '../support/gateway.mjs';
import { startTwoIsolates } from '../support/isolates.mjs';

const GPT = 'databricks-gpt-5-1';
const TOKEN = 'scrape-token-7f3a91c2';
const hash = (key) => createHash('sha256').update(key).digest('hex');
const pico = (usd) => {
  const [whole, frac = ''] = String(usd).split('.');
  return BigInt(whole) * 1_000_000_000_000n + BigInt(frac.padEnd(12, '0').slice(0, 12));
};

let gw;
let key;
const calls = [];

async function scrape(credential = TOKEN) {
  const res = await fetch(`${gw.url}/metrics`, { headers: { authorization: `Bearer ${credential}` } });
  const text = await res.text();
  assert.equal(res.status, 200, text);
  assert.match(res.headers.get('content-type'), /^text\/plain; version=0\.0\.4/);
  return { text, families: parsePrometheusTextFormat(text) };
}

const family = (families, name) => families.find((f) => f.name === name);
const samples = (families, name, labels = {}) =>
  (family(families, name)?.metrics ?? []).filter((m) => Object.entries(labels).every(([k, v]) => m.labels?.[k] === v));

before(async () => {
  gw = await startGateway({ bindings: { METRICS_TOKEN: TOKEN } });
  assert.equal((await raw(gw, '/team/new', { body: { team_id: 'team-m' } })).status, 200);
  key = (await raw(gw, '/key/generate', { body: { key_alias: 'scraped', team_id: 'team-m', user_id: 'ursula' } })).json.key;
  const client = gw.client({ apiKey: key });
  for (const content of ['one', 'two three']) {
    const { data, response } = await client.chat.completions
      .create({ model: GPT, user: 'carol', messages: userMessage(content) })
      .withResponse();
    calls.push({ cost: pico(response.headers.get('x-litellm-response-cost')), usage: data.usage });
  }
  const { data, response } = await gw.client().chat.completions.create({ model: GPT, messages: userMessage('master') }).withResponse();
  calls.push({ cost: pico(response.headers.get('x-litellm-response-cost')), usage: data.usage, master: true });
  const failed = await raw(gw, '/v1/chat/completions', { key, body: { model: 'missing-endpoint', user: 'carol', messages: userMessage('x') } });
  assert.equal(failed.status, 404);
  await eventually(
    async () => {
      const { families } = await scrape();
      const counts = samples(families, 'litellm_requests_metric_total').map((m) => Number(m.value));
      return counts.reduce((a, b) => a + b, 0) === 4;
    },
    5000,
    'four requests in /metrics',
  );
});

after(async () => {
  await gw?.close();
});

test('request, spend and token counters per key, end user and model, as the calls made', async () => {
  const { families } = await scrape();
  for (const name of ['litellm_requests_metric_total', 'litellm_spend_metric_total', 'litellm_total_tokens_metric_total']) {
    assert.equal(family(families, name).type, 'COUNTER', name);
  }
  const mine = { hashed_api_key: hash(key), end_user: 'carol', requested_model: GPT, model_id: 'gpt51-primary' };
  const [requests] = samples(families, 'litellm_requests_metric_total', mine);
  assert.equal(requests.value, '2');
  assert.deepEqual(
    [requests.labels.api_key_alias, requests.labels.team, requests.labels.user, requests.labels.model, requests.labels.api_provider],
    ['scraped', 'team-m', 'ursula', 'databricks/databricks-gpt-5-1', 'databricks'],
  );
  const keyCalls = calls.filter((c) => !c.master);
  const spend = keyCalls.reduce((a, c) => a + c.cost, 0n);
  assert.ok(spend > 0n);
  assert.equal(Number(samples(families, 'litellm_spend_metric_total', mine)[0].value), Number(spend) / 1e12);
  const tokens = (f) => keyCalls.reduce((a, c) => a + f(c.usage), 0);
  assert.equal(Number(samples(families, 'litellm_total_tokens_metric_total', mine)[0].value), tokens((u) => u.total_tokens));
  assert.equal(Number(samples(families, 'litellm_input_tokens_metric_total', mine)[0].value), tokens((u) => u.prompt_tokens));
  assert.equal(Number(samples(families, 'litellm_output_tokens_metric_total', mine)[0].value), tokens((u) => u.completion_tokens));
  // The master key's call, under an empty key hash; the failure, counted as one.
  const master = samples(families, 'litellm_requests_metric_total', { hashed_api_key: '' });
  assert.equal(master.length, 1);
  assert.equal(Number(samples(families, 'litellm_spend_metric_total', { hashed_api_key: '' })[0].value), Number(calls[2].cost) / 1e12);
  const failed = { hashed_api_key: hash(key), requested_model: 'missing-endpoint' };
  assert.equal(samples(families, 'litellm_proxy_failed_requests_metric_total', failed)[0].value, '1');
  assert.equal(samples(families, 'litellm_spend_metric_total', failed)[0].value, '0.0');
});

test('the latency histogram counts every request of a model group in its buckets', async () => {
  const { text, families } = await scrape();
  const histogram = family(families, 'litellm_request_total_latency_metric');
  assert.equal(histogram.type, 'HISTOGRAM');
  // The parser merges buckets across label sets; the text has one series per model group.
  const gpt = text.split('\n').filter((l) => l.startsWith('litellm_request_total_latency_metric_bucket{model_group="databricks-gpt-5-1"'));
  assert.equal(gpt.length, 18, 'LiteLLM\'s 17 bounds and +Inf');
  const counts = gpt.map((l) => Number(l.split(' ').at(-1)));
  assert.deepEqual(counts, [...counts].sort((a, b) => a - b), 'cumulative');
  assert.equal(counts.at(-1), 3);
  assert.match(text, /^litellm_request_total_latency_metric_count\{model_group="databricks-gpt-5-1"\} 3$/m);
  assert.match(text, /^litellm_request_total_latency_metric_sum\{model_group="databricks-gpt-5-1"\} \d+(\.\d+)?(e-?\d+)?$/m);
  assert.equal(histogram.metrics[0].buckets['+Inf'], '1', 'the last group read (missing-endpoint) had one request');
});

test('deployment states: 0 healthy, 1 after failures in the last minute', async () => {
  const { families } = await scrape();
  const state = (model) => samples(families, 'litellm_deployment_state', { litellm_model_name: model });
  assert.equal(family(families, 'litellm_deployment_state').type, 'GAUGE');
  assert.equal(state('databricks/databricks-gpt-5-1').find((m) => m.labels.model_id === 'gpt51-primary').value, '0');
  assert.equal(state('databricks/does-not-exist-endpoint')[0].value, '1');
  assert.ok(state('databricks/does-not-exist-endpoint')[0].labels.api_base.startsWith('http://127.0.0.1:'));
});

test('the master key or the scrape token; anyone else 401', async () => {
  await scrape(MASTER_KEY);
  for (const credential of [key, 'scrape-token-wrong', 'sk-nobody']) {
    const res = await raw(gw, '/metrics', { method: 'GET', key: credential });
    assert.equal(res.status, 401, credential);
    assert.equal(res.json.error.type, 'authentication_error');
  }
  assert.equal((await raw(gw, '/metrics', { method: 'GET', key: null })).status, 401);
});

test('without a scrape token configured, only the master key', async () => {
  const other = await startGateway();
  try {
    const res = await raw(other, '/metrics', { method: 'GET', key: TOKEN });
    assert.equal(res.status, 401);
    const ok = await raw(other, '/metrics', { method: 'GET' });
    assert.equal(ok.status, 200, ok.text);
    assert.deepEqual(
      parsePrometheusTextFormat(ok.text).filter((f) => f.metrics.length > 0).map((f) => f.name),
      ['litellm_deployment_state'],
      'an idle gateway has no request series, only its deployments',
    );
  } finally {
    await other.close();
  }
});

test('the whole gateway: requests served by two isolates are counted by either', async () => {
  const two = await startTwoIsolates();
  try {
    const results = await Promise.all(
      Array.from({ length: 10 }, (_, i) =>
        two.send(i % 2 ? 'a' : 'b', '/v1/chat/completions', { body: { model: GPT, user: 'iris', messages: userMessage(`both ${i}`) } }),
      ),
    );
    for (const res of results) assert.equal(res.status, 200, res.text);
    const spend = results.reduce((a, res) => a + pico(res.headers.get('x-litellm-response-cost')), 0n);
    const series = async (which, name) => {
      const res = await two.send(which, '/metrics', { method: 'GET' });
      assert.equal(res.status, 200, res.text);
      return samples(parsePrometheusTextFormat(res.text), name, { end_user: 'iris' });
    };
    await eventually(
      async () => (await series('a', 'litellm_requests_metric_total'))[0]?.value === '10',
      5000,
      'ten requests seen through isolate a',
    );
    assert.equal((await series('b', 'litellm_requests_metric_total'))[0].value, '10');
    assert.equal(Number((await series('b', 'litellm_spend_metric_total'))[0].value), Number(spend) / 1e12);
  } finally {
    await two.close();
  }
});
