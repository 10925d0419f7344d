// Anthropic's Messages API through the gateway, with the official Anthropic SDK: native on a
// Claude deployment (the fake's /anthropic/v1/messages), translated to chat on GPT, with
// virtual keys, budgets, spend and prompt-cache pricing, and errors the SDK raises typed.

import { test, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import Anthropic from '@anthropic-ai/sdk';
import OpenAI from 'openai';
import { startGateway, raw, eventually, MASTER_KEY, DATABRICKS_TOKEN } from '../support/gateway.mjs';

const NATIVE = 'databricks-claude-sonnet-4-5';
const TRANSLATED = 'databricks-gpt-5-1';
// claude-cache-priced's prices in tests/fixtures/litellm_config.yaml, in pico-dollars a token.
const PICO = { input: 1_000_000_000n, output: 2_000_000_000n, read: 100_000_000n, creation: 1_250_000_000n };
const WEATHER = {
  name: 'get_weather',
  description: 'The weather in a city',
  input_schema: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
};

let gw;
before(async () => {
  gw = await startGateway();
});
after(async () => {
  await gw?.close();
});
beforeEach(() => gw.fake.reset());

const anthropic = (apiKey = MASTER_KEY, options = {}) =>
  new Anthropic({ baseURL: gw.url, apiKey, maxRetries: 0, ...options });
const ask = (model, content, extra = {}) => ({ model, max_tokens: 200, messages: [{ role: 'user', content }], ...extra });

async function generate(fields) {
  const res = await raw(gw, '/key/generate', { body: fields });
  assert.equal(res.status, 200, res.text);
  return res.json;
}
const keyInfo = async (key) => (await raw(gw, `/key/info?key=${key}`, { method: 'GET' })).json.info;
const spendLogs = async (token) => (await raw(gw, `/spend/logs?api_key=${token}`, { method: 'GET' })).json;

/** The error a call raises (it must raise one). */
async function raised(promise) {
  try {
    await promise;
  } catch (e) {
    return e;
  }
  assert.fail('the call succeeded');
}

/** An Anthropic usage's cost at claude-cache-priced's prices, in pico-dollars. */
const costPico = (u) =>
  BigInt(u.input_tokens) * PICO.input +
  BigInt(u.cache_creation_input_tokens) * PICO.creation +
  BigInt(u.cache_read_input_tokens) * PICO.read +
  BigInt(u.output_tokens) * PICO.output;

test('create: Claude answers natively, GPT through chat, each as a Message with the requested name', async () => {
  const client = anthropic(MASTER_KEY, { defaultHeaders: { 'anthropic-beta': 'test-feature-2025-01-01' } });
  for (const model of [NATIVE, TRANSLATED]) {
    gw.fake.reset();
    const { data, response } = await client.messages.create(ask(model, 'Hello there')).withResponse();
    assert.equal(data.type, 'message');
    assert.equal(data.role, 'assistant');
    assert.equal(data.model, model);
    assert.match(data.id, /^msg_/);
    assert.deepEqual(data.content, [{ type: 'text', text: 'Echo: Hello there' }]);
    assert.equal(data.stop_reason, 'end_turn');
    assert.ok(data.usage.input_tokens > 0 && data.usage.output_tokens > 0, JSON.stringify(data.usage));
    // Everything a chat answer carries.
    assert.equal(response.headers.get('x-litellm-model-group'), model);
    assert.ok(Number(response.headers.get('x-litellm-response-cost')) > 0);
    assert.ok(response.headers.get('x-litellm-call-id'));

    const [sent] = gw.fake.requests;
    if (model === NATIVE) {
      assert.equal(sent.path, '/serving-endpoints/anthropic/v1/messages');
      assert.equal(sent.body.model, NATIVE);
      assert.deepEqual(sent.body.messages, [{ role: 'user', content: 'Hello there' }]);
      assert.match(sent.headers['anthropic-version'], /^\d{4}-\d{2}-\d{2}$/);
      assert.equal(sent.headers['anthropic-beta'], 'test-feature-2025-01-01');
    } else {
      assert.equal(sent.path, '/serving-endpoints/chat/completions');
      assert.equal(sent.body.model, TRANSLATED);
      assert.deepEqual(sent.body.messages, [{ role: 'user', content: 'Hello there' }]);
      assert.equal(sent.body.max_tokens, 200);
      assert.equal(sent.headers['anthropic-version'], undefined);
    }
    assert.equal(sent.headers.authorization, `Bearer ${DATABRICKS_TOKEN}`, "the deployment's token, never the client's key");
  }
  // LiteLLM's other path, which the SDK reaches with a base URL ending in /anthropic.
  const other = new Anthropic({ baseURL: `${gw.url}/anthropic`, apiKey: MASTER_KEY, maxRetries: 0 });
  const message = await other.messages.create(ask(NATIVE, 'Hi again'));
  assert.equal(message.content[0].text, 'Echo: Hi again');
});

test('stream: events as they arrive, assembled by messages.stream().finalMessage()', async () => {
  for (const model of [NATIVE, TRANSLATED]) {
    gw.fake.reset();
    const stream = anthropic().messages.stream(ask(model, 'one two three four five [fake:chunks=4]'));
    const texts = [];
    stream.on('text', (text) => texts.push(text));
    const final = await stream.finalMessage();
    assert.equal(final.model, model);
    assert.equal(final.content[0].text, 'Echo: one two three four five');
    assert.ok(texts.length >= 4, `${model}: ${texts.length} text events`);
    assert.equal(texts.join(''), 'Echo: one two three four five');
    assert.equal(final.stop_reason, 'end_turn');
    assert.ok(final.usage.output_tokens > 0);
  }
  // The log line of each stream has its usage, read from the events.
  await eventually(() => gw.requestLogs().filter((l) => l.route === '/v1/messages' && l.stream).length >= 2);
  const lines = gw.requestLogs().filter((l) => l.route === '/v1/messages' && l.stream);
  for (const line of lines.slice(-2)) {
    assert.equal(line.status, 200);
    assert.ok(line.prompt_tokens > 0 && line.completion_tokens > 0, JSON.stringify(line));
    assert.equal(line.estimated, undefined);
  }
});

test('tools: a tool_use answered with a tool_result, natively and through chat, streamed and not', async () => {
  for (const model of [NATIVE, TRANSLATED]) {
    gw.fake.reset();
    const client = anthropic();
    const messages = [{ role: 'user', content: 'What is the weather in Paris? [fake:tool]' }];
    const first = await client.messages.stream({ model, max_tokens: 200, tools: [WEATHER], messages }).finalMessage();
    assert.equal(first.stop_reason, 'tool_use', JSON.stringify(first));
    const call = first.content.find((b) => b.type === 'tool_use');
    assert.equal(call.name, 'get_weather');
    assert.deepEqual(call.input, { city: 'Paris' });
    assert.match(call.id, /^(toolu_|call_)/);

    const next = [
      ...messages,
      { role: 'assistant', content: first.content },
      { role: 'user', content: [{ type: 'tool_result', tool_use_id: call.id, content: '18 C and sunny' }] },
    ];
    const second = await client.messages.create({ model, max_tokens: 200, tools: [WEATHER], messages: next });
    assert.equal(second.stop_reason, 'end_turn', JSON.stringify(second));
    assert.equal(second.content[0].type, 'text');
    const sent = gw.fake.requests[1].body;
    if (model === TRANSLATED) {
      assert.deepEqual(sent.tools[0], { type: 'function', function: { name: 'get_weather', description: WEATHER.description, parameters: WEATHER.input_schema } });
      assert.equal(sent.messages[1].tool_calls[0].id, call.id);
      assert.deepEqual(sent.messages[2], { role: 'tool', tool_call_id: call.id, content: '18 C and sunny' });
    } else {
      assert.deepEqual(sent.messages[2].content[0].tool_use_id, call.id);
    }
  }
});

test('typed errors: authentication, permission, unknown model, bad request, in Anthropic shape', async () => {
  const bad = await raised(anthropic('sk-not-a-key').messages.create(ask(NATIVE, 'x')));
  assert.ok(bad instanceof Anthropic.AuthenticationError, bad.constructor.name);
  assert.equal(bad.status, 401);
  assert.equal(bad.error.type, 'error');
  assert.equal(bad.error.error.type, 'authentication_error');

  const { key } = await generate({ models: [TRANSLATED] });
  const denied = await raised(anthropic(key).messages.create(ask(NATIVE, 'x')));
  assert.ok(denied instanceof Anthropic.PermissionDeniedError, denied.constructor.name);
  assert.equal(denied.error.error.type, 'permission_error');
  assert.match(denied.error.error.message, /not allowed to access model=databricks-claude-sonnet-4-5/);
  // The same key over Bearer (Claude Code's ANTHROPIC_AUTH_TOKEN) uses its allowed model.
  const bearer = new Anthropic({ baseURL: gw.url, authToken: key, apiKey: null, maxRetries: 0 });
  assert.equal((await bearer.messages.create(ask(TRANSLATED, 'allowed'))).content[0].text, 'Echo: allowed');

  const unknown = await raised(anthropic().messages.create(ask('no-such-model', 'x')));
  assert.ok(unknown instanceof Anthropic.NotFoundError, unknown.constructor.name);
  assert.equal(unknown.error.error.type, 'not_found_error');

  const empty = await raised(anthropic().messages.create({ model: NATIVE, max_tokens: 10, messages: [] }));
  assert.ok(empty instanceof Anthropic.BadRequestError, empty.constructor.name);
  assert.equal(empty.error.error.type, 'invalid_request_error');
  assert.match(empty.error.error.message, /messages/);

  // Claude's own refusal comes back with its status and message.
  const tooLong = await raised(anthropic().messages.create(ask(NATIVE, 'x [fake:too-long]')));
  assert.ok(tooLong instanceof Anthropic.BadRequestError, tooLong.constructor.name);
  assert.match(tooLong.error.error.message, /Input is too long for requested model/);

  // Refusals before any parsing are Anthropic-shaped too.
  const wrongMethod = await raw(gw, '/v1/messages', { method: 'GET' });
  assert.equal(wrongMethod.status, 405);
  assert.equal(wrongMethod.json.type, 'error');
  const notJson = await raw(gw, '/v1/messages', { body: '{"model":', headers: { 'content-type': 'application/json' } });
  assert.deepEqual([notJson.status, notJson.json.error.type], [400, 'invalid_request_error']);
  // The OpenAI routes keep LiteLLM's envelope.
  const chat = await raw(gw, '/v1/chat/completions', { body: { model: 'no-such-model', messages: [] } });
  assert.equal(chat.json.error.code, '400');
});

test('an rpm-limited key gets a RateLimitError with retry-after', async () => {
  const { key } = await generate({ rpm_limit: 1 });
  await anthropic(key).messages.create(ask(NATIVE, 'first'));
  const limited = await raised(anthropic(key).messages.create(ask(NATIVE, 'second')));
  assert.ok(limited instanceof Anthropic.RateLimitError, limited.constructor.name);
  assert.equal(limited.status, 429);
  assert.equal(limited.error.error.type, 'rate_limit_error');
  assert.ok(Number(limited.headers.get('retry-after')) >= 1);
});

test('an upstream that times out: a typed 504 after the retries', async () => {
  const slow = await raised(anthropic().messages.create(ask('slow-model', 'wait [fake:delay=1500]')));
  assert.ok(slow instanceof Anthropic.InternalServerError, slow.constructor.name);
  assert.equal(slow.status, 504);
  assert.equal(slow.error.error.type, 'timeout_error');
  assert.equal(slow.headers.get('x-should-retry'), 'false');
});

test('prompt caching: the second call reads what the first wrote, each charged at its cache price, in /key/info and /spend/logs', async () => {
  const { key, token } = await generate({ max_budget: 10, models: ['claude-cache-priced'] });
  const client = anthropic(key);
  const system = [
    { type: 'text', text: 'You answer questions about the weather in short sentences. '.repeat(20), cache_control: { type: 'ephemeral' } },
  ];
  const request = { model: 'claude-cache-priced', max_tokens: 100, system, messages: [{ role: 'user', content: 'Is it warm?' }] };
  const first = await client.messages.create(request).withResponse();
  const second = await client.messages.create(request).withResponse();
  const streamed = await client.messages.stream(request).finalMessage();

  const [u1, u2, u3] = [first.data.usage, second.data.usage, streamed.usage];
  assert.ok(u1.cache_creation_input_tokens > 100, JSON.stringify(u1));
  assert.equal(u1.cache_read_input_tokens, 0);
  assert.equal(u2.cache_creation_input_tokens, 0);
  assert.equal(u2.cache_read_input_tokens, u1.cache_creation_input_tokens);
  assert.equal(u2.input_tokens, u1.input_tokens);
  assert.equal(u3.cache_read_input_tokens, u1.cache_creation_input_tokens);
  // The cost is exact: each kind of prompt token at its own price, never twice.
  for (const [{ data, response }, usage] of [[first, u1], [second, u2]]) {
    assert.equal(response.headers.get('x-litellm-response-cost'), (Number(costPico(usage)) / 1e12).toString(), data.id);
  }
  assert.ok(costPico(u2) < costPico(u1) / 5n, 'a cache read is a tenth of an input token');

  const expected = [u1, u2, u3].reduce((sum, u) => sum + costPico(u), 0n);
  await eventually(async () => (await keyInfo(key)).spend > 0, 3000, 'the spend recorded');
  const info = await keyInfo(key);
  assert.equal(info.spend, Number(expected) / 1e12);

  const rows = (await spendLogs(token)).sort((a, b) => a.startTime.localeCompare(b.startTime));
  assert.equal(rows.length, 3);
  const byId = new Map(rows.map((r) => [r.request_id, r]));
  const row1 = byId.get(first.data.id);
  assert.deepEqual(
    [row1.prompt_tokens, row1.cache_creation_input_tokens, row1.cache_read_input_tokens, row1.completion_tokens],
    [u1.input_tokens + u1.cache_creation_input_tokens, u1.cache_creation_input_tokens, 0, u1.output_tokens],
  );
  const row2 = byId.get(second.data.id);
  assert.equal(row2.cache_read_input_tokens, u2.cache_read_input_tokens);
  assert.equal(row2.prompt_tokens, u2.input_tokens + u2.cache_read_input_tokens);
  assert.equal(row2.spend, Number(costPico(u2)) / 1e12);
  const row3 = byId.get(streamed.id);
  assert.equal(row3.stream, true);
  assert.equal(row3.cache_read_input_tokens, u3.cache_read_input_tokens);
  assert.equal(row3.estimated, false);
  // The log line shows the cache tokens too.
  const line = gw.requestLogs().find((l) => l.route === '/v1/messages' && l.cache_read_tokens === u2.cache_read_input_tokens);
  assert.ok(line, 'a log line with the cache reads');
});

test('chat: a cache_control on a message reaches Claude inside its content, and its cache tokens are priced', async () => {
  const { key, token } = await generate({ max_budget: 10 });
  const openai = new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: key, maxRetries: 0 });
  const long = 'Answer in one short sentence about the weather. '.repeat(20);
  const request = {
    model: 'claude-cache-priced',
    messages: [
      { role: 'system', content: long, cache_control: { type: 'ephemeral' } },
      { role: 'user', content: 'Is it warm?' },
    ],
  };
  const first = await openai.chat.completions.create(request);
  const second = await openai.chat.completions.create(request);
  assert.deepEqual(gw.fake.requests[0].body.messages[0], {
    role: 'system',
    content: [{ type: 'text', text: long, cache_control: { type: 'ephemeral' } }],
  });
  const created = first.usage.cache_creation_input_tokens;
  assert.ok(created > 100, JSON.stringify(first.usage));
  assert.equal(second.usage.cache_read_input_tokens, created);
  assert.equal(second.usage.prompt_tokens, first.usage.prompt_tokens, 'prompt_tokens include the cached tokens');
  const cost = (u) =>
    BigInt(u.prompt_tokens - (u.cache_read_input_tokens ?? 0) - (u.cache_creation_input_tokens ?? 0)) * PICO.input +
    BigInt(u.cache_creation_input_tokens ?? 0) * PICO.creation +
    BigInt(u.cache_read_input_tokens ?? 0) * PICO.read +
    BigInt(u.completion_tokens) * PICO.output;
  await eventually(async () => (await spendLogs(token)).length === 2, 3000, 'two spend rows');
  const rows = new Map((await spendLogs(token)).map((r) => [r.request_id, r]));
  assert.equal(rows.get(first.id).spend, Number(cost(first.usage)) / 1e12);
  assert.equal(rows.get(second.id).spend, Number(cost(second.usage)) / 1e12);
  assert.equal(rows.get(second.id).cache_read_input_tokens, created);
});

test("a key's budget: held, charged, and refused once spent, as a BadRequestError", async () => {
  const { key } = await generate({ max_budget: 0.05, models: ['claude-cache-priced'] });
  const client = anthropic(key);
  let refusal = null;
  for (let i = 0; i < 10 && !refusal; i++) {
    try {
      await client.messages.create(ask('claude-cache-priced', `spend some words ${i}`, { max_tokens: 10 }));
    } catch (e) {
      refusal = e;
    }
  }
  assert.ok(refusal instanceof Anthropic.BadRequestError, refusal?.constructor.name);
  assert.equal(refusal.error.error.type, 'invalid_request_error');
  assert.match(refusal.error.error.message, /^Budget has been exceeded! Current cost: [\d.]+, Max budget: 0\.05$/);
  assert.ok((await keyInfo(key)).spend <= 0.05);
});

test('a fallback from a Claude group to a GPT group translates, streamed or not', async () => {
  gw.fake.override('claude-family-a', '[fake:error=500]');
  try {
    const { data, response } = await anthropic().messages.create(ask('claude-then-gpt', 'Fall back')).withResponse();
    assert.equal(data.type, 'message');
    assert.equal(data.content[0].text, 'Echo: Fall back');
    assert.equal(response.headers.get('x-litellm-attempted-fallbacks'), '1');
    assert.equal(response.headers.get('x-litellm-model-group'), 'claude-then-gpt');
    assert.equal(data.model, 'gpt-then-claude', 'the answer names the group that served it');
    const paths = gw.fake.requests.map((r) => `${r.path} ${r.body?.model}`);
    assert.equal(paths.at(0), '/serving-endpoints/anthropic/v1/messages claude-family-a');
    assert.equal(paths.at(-1), '/serving-endpoints/chat/completions gpt-family-b');

    gw.fake.reset();
    gw.fake.override('claude-family-a', '[fake:error=500]');
    const final = await anthropic().messages.stream(ask('claude-then-gpt', 'Fall back streaming')).finalMessage();
    assert.equal(final.content[0].text, 'Echo: Fall back streaming');
    assert.equal(gw.fake.requests.at(-1).path, '/serving-endpoints/chat/completions');
  } finally {
    gw.fake.override('claude-family-a', null);
  }
  // And the other way: GPT fails over to Claude, which gets the Messages natively.
  gw.fake.reset();
  gw.fake.override('gpt-family-b', '[fake:error=500]');
  try {
    const message = await anthropic().messages.create(ask('gpt-then-claude', 'Other way'));
    assert.equal(message.content[0].text, 'Echo: Other way');
    assert.equal(gw.fake.requests.at(-1).path, '/serving-endpoints/anthropic/v1/messages');
  } finally {
    gw.fake.override('gpt-family-b', null);
  }
});

test('a client that hangs up mid-stream: the upstream is cancelled, what it produced is charged', async () => {
  const { key, token } = await generate({ max_budget: 10, max_parallel_requests: 1 });
  const controller = new AbortController();
  const res = await fetch(`${gw.url}/v1/messages`, {
    method: 'POST',
    headers: { 'x-api-key': key, 'anthropic-version': '2023-06-01', 'content-type': 'application/json' },
    body: JSON.stringify(ask(NATIVE, 'a b c d e f g h i j k l m n o p [fake:chunks=16] [fake:spacing=150]', { stream: true })),
    signal: controller.signal,
  });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('content-type'), 'text/event-stream');
  const reader = res.body.getReader();
  const { value } = await reader.read();
  assert.match(new TextDecoder().decode(value), /^event: message_start\n/);
  controller.abort();
  await eventually(() => gw.fake.abortedCount === 1, 4000, 'the upstream request cancelled');
  await eventually(async () => (await keyInfo(key)).spend > 0, 4000, 'the spend recorded');
  const [row] = await spendLogs(token);
  assert.equal(row.stream, true);
  assert.ok(row.prompt_tokens > 0, JSON.stringify(row));
  // The slot is free again.
  assert.equal((await anthropic(key).messages.create(ask(NATIVE, 'next'))).content[0].text, 'Echo: next');
});

test("count_tokens: the gateway's estimate, for models the key may use, without calling Databricks", async () => {
  const client = anthropic();
  const plain = await client.messages.countTokens({ model: NATIVE, messages: [{ role: 'user', content: 'Hello there, how are you?' }] });
  assert.ok(plain.input_tokens > 0);
  const withTools = await client.messages.countTokens({
    model: NATIVE,
    tools: [WEATHER],
    system: 'Be brief.',
    messages: [{ role: 'user', content: 'Hello there, how are you?' }],
  });
  assert.ok(withTools.input_tokens > plain.input_tokens, `${withTools.input_tokens} > ${plain.input_tokens}`);
  assert.equal(gw.fake.requests.length, 0);
  const { key } = await generate({ models: [TRANSLATED] });
  const denied = await raised(anthropic(key).messages.countTokens({ model: NATIVE, messages: [{ role: 'user', content: 'x' }] }));
  assert.ok(denied instanceof Anthropic.PermissionDeniedError, denied.constructor.name);
  const unknown = await raised(client.messages.countTokens({ model: 'no-such-model', messages: [{ role: 'user', content: 'x' }] }));
  assert.ok(unknown instanceof Anthropic.NotFoundError, unknown.constructor.name);
});
