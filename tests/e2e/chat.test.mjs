// Non-streaming chat through the built worker under workerd, with the official openai SDK.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { startGateway, raw, userMessage, eventually, MASTER_KEY, DATABRICKS_TOKEN } from '../support/gateway.mjs';

let gw;
before(async () => {
  gw = await startGateway();
});
after(async () => {
  await gw?.close();
});

// The model names of the test config, in file order, without repeats.
const CONFIGURED = [
  ...new Set(
    [...readFileSync(new URL('../fixtures/litellm_config.yaml', import.meta.url), 'utf8').matchAll(/^\s*- model_name: (\S+)/gm)].map(
      (m) => m[1],
    ),
  ),
];

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

test('the SDK gets a chat.completion named after the requested model, with the upstream usage', async () => {
  gw.fake.reset();
  const answer = await gw.client().chat.completions.create({
    model: 'databricks-gpt-5-1',
    messages: userMessage('Hello!'),
  });
  assert.equal(answer.object, 'chat.completion');
  assert.equal(answer.model, 'databricks-gpt-5-1');
  assert.match(answer.id, /^chatcmpl_/);
  assert.equal(answer.choices[0].message.role, 'assistant');
  assert.equal(answer.choices[0].message.content, 'Echo: Hello!');
  assert.equal(answer.choices[0].finish_reason, 'stop');
  assert.equal(gw.fake.requests.length, 1);
  assert.deepEqual(answer.usage, gw.fake.requests[0].usage);
});

test('the request reaches Databricks translated: endpoint, max_tokens, token, unknown fields kept', async () => {
  gw.fake.reset();
  // gpt-oss takes a temperature (GPT-5 refuses any but 1, as the strict fake does).
  await gw.client().chat.completions.create({
    model: 'databricks-gpt-oss-120b',
    messages: [
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: 'Count to three' },
    ],
    max_completion_tokens: 50,
    temperature: 0.5,
    // A field the gateway does not know must pass through unchanged.
    custom_databricks_field: { nested: [1, 2] },
  });
  const [sent] = gw.fake.requests;
  assert.equal(sent.path, '/serving-endpoints/chat/completions');
  assert.equal(sent.headers.authorization, `Bearer ${DATABRICKS_TOKEN}`);
  assert.match(sent.headers['user-agent'], /^databricks-gateway\/\d+\.\d+\.\d+$/);
  assert.equal(sent.body.model, 'databricks-gpt-oss-120b');
  assert.equal(sent.body.max_tokens, 50);
  assert.equal('max_completion_tokens' in sent.body, false);
  assert.equal(sent.body.temperature, 0.5);
  assert.deepEqual(sent.body.custom_databricks_field, { nested: [1, 2] });
  assert.equal(sent.body.messages.length, 2);
  // The caller's key never travels upstream.
  assert.equal(JSON.stringify(sent.headers).includes(MASTER_KEY), false);
});

test('each model name routes to its own endpoint, with $VAR and ${VAR} references resolved', async () => {
  gw.fake.reset();
  const answer = await gw.client().chat.completions.create({
    model: 'databricks-claude-sonnet-4-5',
    messages: userMessage('Hi Claude'),
  });
  assert.equal(answer.model, 'databricks-claude-sonnet-4-5');
  assert.equal(gw.fake.requests[0].body.model, 'databricks-claude-sonnet-4-5');
  assert.equal(gw.fake.requests[0].headers.authorization, `Bearer ${DATABRICKS_TOKEN}`);
});

test('reasoning content lists become content, reasoning_content and thinking_blocks', async () => {
  const answer = await gw.client().chat.completions.create({
    model: 'databricks-gpt-oss-120b',
    messages: userMessage('Why is the sky blue?'),
  });
  const message = answer.choices[0].message;
  assert.equal(typeof message.content, 'string');
  assert.equal(message.content, 'Echo: Why is the sky blue?');
  assert.equal(message.reasoning_content, 'Thinking about: Why is the sky blue?');
  assert.equal(message.thinking_blocks.length, 1);
  assert.equal(message.thinking_blocks[0].type, 'thinking');
  assert.equal(message.thinking_blocks[0].thinking, message.reasoning_content);
  assert.match(message.thinking_blocks[0].signature, /^sig-/);
  assert.ok(answer.usage.completion_tokens_details.reasoning_tokens > 0);
});

test("the seed's curl works: /chat/completions with x-litellm-api-key", async () => {
  const res = await raw(gw, '/chat/completions', {
    key: null,
    headers: { 'x-litellm-api-key': MASTER_KEY },
    body: { model: 'databricks-gpt-5-1', messages: userMessage('Hello!') },
  });
  assert.equal(res.status, 200);
  assert.equal(res.json.choices[0].message.content, 'Echo: Hello!');
});

test('the master key is accepted in every LiteLLM header', async () => {
  const body = { model: 'databricks-gpt-5-1', messages: userMessage('hi') };
  for (const headers of [
    { authorization: `Bearer ${MASTER_KEY}` },
    { authorization: `bearer ${MASTER_KEY}` },
    { 'x-litellm-api-key': MASTER_KEY },
    { 'api-key': MASTER_KEY },
    { 'x-api-key': MASTER_KEY },
  ]) {
    const res = await raw(gw, '/v1/chat/completions', { key: null, headers, body });
    assert.equal(res.status, 200, JSON.stringify(Object.keys(headers)));
  }
});

test('answers carry LiteLLM headers, and the call id is the one logged', async () => {
  const res = await raw(gw, '/v1/chat/completions', {
    body: { model: 'databricks-gpt-5-1', messages: userMessage('headers please') },
  });
  assert.equal(res.status, 200);
  const callId = res.headers.get('x-litellm-call-id');
  assert.match(callId, UUID);
  assert.equal(res.headers.get('x-litellm-model-id'), 'gpt51-primary');
  assert.equal(res.headers.get('x-litellm-model-group'), 'databricks-gpt-5-1');
  assert.equal(res.headers.get('x-litellm-model-api-base'), gw.fake.url);
  const total = Number(res.headers.get('x-litellm-response-duration-ms'));
  const overhead = Number(res.headers.get('x-litellm-overhead-duration-ms'));
  assert.ok(Number.isFinite(total) && total >= 0);
  assert.ok(Number.isFinite(overhead) && overhead >= 0 && overhead <= total);
  const line = gw.requestLogs().find((l) => l.call_id === callId);
  assert.ok(line, 'a log line with the call id');
  assert.equal(line.status, 200);
  assert.equal(line.route, '/v1/chat/completions');
  assert.equal(line.model, 'databricks-gpt-5-1');
  assert.equal(line.deployment, 'gpt51-primary');
  assert.equal(line.upstream_status, 200);
  assert.equal(typeof line.upstream_ms, 'number');
  assert.equal(typeof line.total_ms, 'number');
  assert.equal(line.total_tokens, line.prompt_tokens + line.completion_tokens);
  assert.ok(line.prompt_tokens > 0);
  // Two different calls get two different ids.
  const again = await raw(gw, '/v1/models', { method: 'GET' });
  assert.notEqual(again.headers.get('x-litellm-call-id'), callId);
});

test('log lines hold no secret and no prompt text', async () => {
  const marker = 'zebra-walrus-marker-8841';
  const linesBefore = gw.requestLogs().length;
  await gw.client().chat.completions.create({ model: 'databricks-gpt-5-1', messages: userMessage(marker) });
  await raw(gw, '/v1/chat/completions', { key: 'sk-wrong-key-123', body: { model: 'databricks-gpt-5-1' } });
  const stream = await gw.client().chat.completions.create({
    model: 'databricks-gpt-5-1',
    stream: true,
    messages: userMessage(marker),
  });
  for await (const _ of stream);
  // A stream's line is written when its pump ends: wait for all three lines before scanning.
  await eventually(() => gw.requestLogs().length >= linesBefore + 3, 3000, 'the three log lines');
  const all = gw.logs.join('\n');
  for (const secret of [MASTER_KEY, DATABRICKS_TOKEN, 'sk-wrong-key-123', marker, 'Echo:']) {
    assert.equal(all.includes(secret), false, `the log contains ${secret}`);
  }
});

test('GET /v1/models and /models list the configured model names (auth required)', async () => {
  const models = [];
  for await (const m of gw.client().models.list()) models.push(m.id);
  assert.ok(CONFIGURED.length >= 10);
  assert.deepEqual(models, CONFIGURED);
  const bare = await raw(gw, '/models', { method: 'GET' });
  assert.equal(bare.status, 200);
  assert.equal(bare.json.object, 'list');
  assert.equal(bare.json.data.length, models.length);
  const anonymous = await raw(gw, '/v1/models', { method: 'GET', key: null });
  assert.equal(anonymous.status, 401);
});

test('GET /v1/models/{model} answers one model, or 404', async () => {
  const model = await gw.client().models.retrieve('databricks-gpt-5-1');
  assert.equal(model.id, 'databricks-gpt-5-1');
  assert.equal(model.object, 'model');
  const missing = await raw(gw, '/v1/models/nope', { method: 'GET' });
  assert.equal(missing.status, 404);
  assert.equal(missing.json.error.type, 'not_found_error');
});

test('health endpoints answer without a key', async () => {
  const live = await raw(gw, '/health/liveliness', { method: 'GET', key: null });
  assert.equal(live.status, 200);
  assert.equal(live.json, "I'm alive!");
  const ready = await raw(gw, '/health/readiness', { method: 'GET', key: null });
  assert.equal(ready.status, 200);
  assert.equal(ready.json.status, 'healthy');
  assert.equal(ready.json.models, CONFIGURED.length);
});

test('concurrent requests are answered independently', async () => {
  const client = gw.client();
  const words = Array.from({ length: 24 }, (_, i) => `word${i}`);
  const answers = await Promise.all(
    words.map((w) => client.chat.completions.create({ model: 'databricks-gpt-5-1', messages: userMessage(w) })),
  );
  assert.deepEqual(
    answers.map((a) => a.choices[0].message.content),
    words.map((w) => `Echo: ${w}`),
  );
});

test('browsers may call it: CORS preflight and headers they can read', async () => {
  const pre = await fetch(`${gw.url}/v1/chat/completions`, {
    method: 'OPTIONS',
    headers: {
      origin: 'https://app.example',
      'access-control-request-method': 'POST',
      'access-control-request-headers': 'authorization, content-type, x-stainless-os',
    },
  });
  assert.equal(pre.status, 204);
  assert.equal(pre.headers.get('access-control-allow-origin'), '*');
  assert.match(pre.headers.get('access-control-allow-methods'), /POST/);
  assert.match(pre.headers.get('access-control-allow-headers'), /x-stainless-os/);
  const res = await raw(gw, '/v1/chat/completions', {
    headers: { origin: 'https://app.example' },
    body: { model: 'databricks-gpt-5-1', messages: userMessage('from a browser') },
  });
  assert.equal(res.headers.get('access-control-allow-origin'), '*');
  assert.match(res.headers.get('access-control-expose-headers'), /x-litellm-response-cost/);
  // Errors carry them too, so that a browser can read why it was refused.
  const refused = await raw(gw, '/v1/models', { method: 'GET', key: null });
  assert.equal(refused.status, 401);
  assert.equal(refused.headers.get('access-control-allow-origin'), '*');
  assert.equal((await fetch(`${gw.url}/nowhere`, { method: 'OPTIONS' })).status, 404);
});
