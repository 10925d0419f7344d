// The fake Databricks' `/serving-endpoints/responses` route, checked on its own (no gateway):
// the official `openai` SDK talks to it as to Databricks, so the shapes the gateway relays and
// translates against are the SDK's. Run: node --test tests/fake-responses.test.mjs

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { startFakeDatabricks } from './fake-databricks.mjs';

const TOKEN = 'dapi-fake-token';
const GPT = 'databricks-gpt-5-1';
const WEATHER = {
  type: 'function', name: 'get_weather', description: 'Current weather', strict: false,
  parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
};

let fake;
let client;
before(async () => {
  fake = await startFakeDatabricks();
  client = new OpenAI({ apiKey: TOKEN, baseURL: fake.url, maxRetries: 0 });
});
after(async () => {
  await fake?.close();
});

async function post(body, token = TOKEN) {
  const res = await fetch(`${fake.url}/responses`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: await res.json() };
}

test('responses.create: a Response object with usage, the served model, reasoning on GPT-5', async () => {
  fake.reset();
  const r = await client.responses.create({ model: GPT, input: 'Say hi', max_output_tokens: 256 });
  assert.equal(r.object, 'response');
  assert.match(r.id, /^resp_/);
  assert.equal(r.status, 'completed');
  assert.equal(r.model, `${GPT}-served`);
  assert.equal(r.output_text, 'Echo: Say hi');
  assert.deepEqual(r.output.map((i) => i.type), ['reasoning', 'message']);
  assert.deepEqual(r.output[0].summary, [], 'no summary unless asked');
  assert.equal(r.usage.input_tokens, 3);
  assert.equal(r.usage.output_tokens, r.usage.output_tokens_details.reasoning_tokens + 3);
  assert.equal(r.usage.total_tokens, r.usage.input_tokens + r.usage.output_tokens);
  assert.equal(r.store, false);
  assert.equal(fake.requests[0].path, '/serving-endpoints/responses');
  assert.equal(fake.requests[0].endpoint, GPT);
  assert.deepEqual(fake.requests[0].usage, r.usage);
});

test('responses.stream: every event in order, numbered, finalResponse with usage', async () => {
  fake.reset();
  const stream = client.responses.stream({
    model: GPT, input: 'Tell me [fake:chunks=4]', reasoning: { effort: 'low', summary: 'auto' },
    include: ['reasoning.encrypted_content'], store: false,
  });
  const types = [];
  const numbers = [];
  stream.on('event', (e) => {
    types.push(e.type);
    numbers.push(e.sequence_number);
  });
  const final = await stream.finalResponse();
  assert.deepEqual(numbers, numbers.map((_, i) => i));
  assert.deepEqual(types.slice(0, 3), ['response.created', 'response.in_progress', 'response.output_item.added']);
  assert.ok(types.includes('response.reasoning_summary_text.delta'));
  assert.equal(types.filter((t) => t === 'response.output_text.delta').length, 4);
  assert.equal(types.at(-1), 'response.completed');
  assert.equal(final.output_text, 'Echo: Tell me');
  assert.match(final.output[0].encrypted_content, /^fake-encrypted:/);
  assert.equal(final.output[0].summary[0].text, 'Thinking about: Tell me');
  assert.ok(final.usage.output_tokens_details.reasoning_tokens > 0);
});

test('function calls: the tool is called, its output answered, a namespace kept; Codex-like turns', async () => {
  fake.reset();
  const first = await client.responses.create({ model: GPT, input: 'Weather in Paris? [fake:tool] [fake:parallel-tools]', tools: [WEATHER] });
  const calls = first.output.filter((i) => i.type === 'function_call');
  assert.equal(calls.length, 2);
  assert.deepEqual(JSON.parse(calls[0].arguments), { city: 'Paris' });
  assert.notEqual(calls[0].call_id, calls[1].call_id);
  const history = [{ role: 'user', content: 'Weather in Paris? [fake:tool] [fake:parallel-tools]' }, ...first.output,
    ...calls.map((c) => ({ type: 'function_call_output', call_id: c.call_id, output: '18C, sunny' }))];
  const second = await client.responses.create({ model: GPT, input: history, tools: [WEATHER] });
  assert.equal(second.output_text, 'Tool output: 18C, sunny');
  // The repeated prefix (the first request's whole input) is reported as cached.
  assert.equal(second.usage.input_tokens_details.cached_tokens, first.usage.input_tokens);
  const streamed = await client.responses.stream({
    model: GPT, input: 'Search [fake:tool]',
    tools: [{ type: 'namespace', name: 'mcp__docs', description: 'Docs', tools: [{ ...WEATHER, name: 'search' }] }],
  }).finalResponse();
  const call = streamed.output.find((i) => i.type === 'function_call');
  assert.equal(call.name, 'search');
  assert.equal(call.namespace, 'mcp__docs');
  assert.deepEqual(JSON.parse(call.arguments), { city: 'Paris' });
});

test('max_output_tokens cuts the answer: incomplete, streamed as response.incomplete', async () => {
  fake.reset();
  const r = await client.responses.create({ model: 'gpt-family-b', input: 'one two three four', max_output_tokens: 2 });
  assert.equal(r.status, 'incomplete');
  assert.deepEqual(r.incomplete_details, { reason: 'max_output_tokens' });
  assert.equal(r.output_text, 'Echo: one');
  const types = [];
  const stream = client.responses.stream({ model: 'gpt-family-b', input: 'one two three four', max_output_tokens: 2 });
  stream.on('event', (e) => types.push(e.type));
  const final = await stream.finalResponse();
  assert.equal(types.at(-1), 'response.incomplete');
  assert.equal(final.status, 'incomplete');
});

test('errors are OpenAI-shaped, so the SDK raises its typed errors', async () => {
  fake.reset();
  await assert.rejects(client.responses.create({ model: GPT, input: 'x [fake:error=429]' }), (e) => {
    assert.ok(e instanceof OpenAI.RateLimitError);
    assert.match(e.message, /rate limit/);
    return true;
  });
  const bad = await post({ model: GPT, input: 'x', previous_response_id: 'resp_1' });
  assert.equal(bad.status, 400);
  assert.equal(bad.body.error.type, 'invalid_request_error');
  assert.equal(bad.body.error.param, 'previous_response_id');
  await assert.rejects(client.responses.create({ model: GPT, input: 'x [fake:nope]' }), OpenAI.BadRequestError);
  // Databricks' own layer still answers in its shape.
  const auth = await post({ model: GPT, input: 'x' }, 'wrong');
  assert.equal(auth.status, 403);
  assert.equal(auth.body.error_code, '403');
});

test('strict refusals: what Databricks and OpenAI refuse on this route', async () => {
  fake.reset();
  const cases = [
    [{ model: 'databricks-claude-sonnet-4-5', input: 'x' }, null, /does not support the Responses API/],
    [{ model: GPT, input: 'x', drop_params: true }, 'drop_params', /Unknown parameter/],
    [{ model: GPT, input: 'x', temperature: 0 }, 'temperature', /temperature/],
    [{ model: GPT }, 'input', /input/],
    [{ model: GPT, input: [{ type: 'function_call_output', call_id: 'call_x', output: 'o' }] }, 'input[0].call_id', /No tool call found/],
    [{ model: GPT, input: [{ type: 'reasoning', summary: [], encrypted_content: 'gateway-thinking-signature:s' }] }, 'input[0].encrypted_content', /could not be verified/],
    [{ model: GPT, input: [{ type: 'item_reference', id: 'msg_1' }] }, 'input[0]', /not supported/],
  ];
  for (const [body, param, message] of cases) {
    const r = await post(body);
    assert.equal(r.status, 400, JSON.stringify(body));
    assert.equal(r.body.error.param, param, JSON.stringify(body));
    assert.match(r.body.error.message, message);
  }
  // Codex models take nothing else.
  const chat = await fetch(`${fake.url}/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'databricks-gpt-5-1-codex-max', messages: [{ role: 'user', content: 'x' }] }),
  });
  assert.equal(chat.status, 400);
  assert.match((await chat.json()).message, /only supports the Responses API/);
  // Lenient: served whatever the endpoint.
  fake.setStrict(false);
  try {
    assert.equal((await post({ model: 'databricks-claude-sonnet-4-5', input: 'x', extra: 1 })).status, 200);
  } finally {
    fake.setStrict(true);
  }
});

test('stream faults: cut, error mid-stream, malformed, split and CRLF framing', async () => {
  fake.reset();
  const rawStream = async (input) => {
    const res = await fetch(`${fake.url}/responses`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: GPT, input, stream: true }),
    });
    return res.text();
  };
  const cut = await rawStream('a b c d e f [fake:truncate]');
  assert.ok(cut.includes('response.output_text.delta') && !cut.includes('response.completed'));
  const failed = await rawStream('a b c d e f [fake:error-mid]');
  assert.ok(failed.trimEnd().split('\n\n').at(-1).startsWith('event: response.failed'));
  const malformed = await rawStream('x [fake:malformed]');
  assert.ok(malformed.includes('data: {"oops": '));
  const crlf = await rawStream('x [fake:sse-crlf] [fake:sse-split]');
  assert.ok(crlf.includes('event: response.completed\r\ndata: '));
  const final = await client.responses.stream({ model: GPT, input: 'hi [fake:sse-split] [fake:spacing=2]' }).finalResponse();
  assert.equal(final.output_text, 'Echo: hi');
});

test('structured output: text.format json_schema is answered with matching JSON', async () => {
  fake.reset();
  const schema = { type: 'object', properties: { city: { type: 'string' }, temp: { type: 'integer' } }, required: ['city', 'temp'] };
  const r = await client.responses.create({
    model: GPT, input: 'weather', text: { format: { type: 'json_schema', name: 'weather', schema, strict: true } },
  });
  assert.deepEqual(Object.keys(JSON.parse(r.output_text)), ['city', 'temp']);
});
