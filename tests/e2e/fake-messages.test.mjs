// The fake Databricks' Anthropic Messages route (POST /serving-endpoints/anthropic/v1/messages),
// checked directly, without the gateway: what the gateway's Messages tests rely on.

import { test, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';

import { startFakeDatabricks } from '../fake-databricks.mjs';

const TOKEN = 'dapi-fake-token';
const CLAUDE = 'databricks-claude-sonnet-4-5';
let fake;

before(async () => {
  fake = await startFakeDatabricks({ token: TOKEN });
});
after(() => fake.close());
beforeEach(() => fake.reset());

function post(body, { token = TOKEN, path = '/anthropic/v1/messages' } = {}) {
  return fetch(`${fake.url}${path}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'anthropic-version': '2023-06-01' },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
}

function ask(content, extra = {}) {
  return { model: CLAUDE, max_tokens: 200, messages: [{ role: 'user', content }], ...extra };
}

// (name, data) of each event of an SSE body, checking every event is named after its type.
function parseSse(text) {
  return text
    .split('\n\n')
    .filter(Boolean)
    .map((raw) => {
      const lines = raw.split('\n');
      const name = lines.find((l) => l.startsWith('event: '))?.slice(7);
      const data = JSON.parse(lines.find((l) => l.startsWith('data: ')).slice(6));
      assert.equal(data.type, name, raw);
      return { name, data };
    });
}

// What the Anthropic SDK's MessageStream accumulates into `finalMessage()`.
function accumulate(events) {
  let message = null;
  const json = new Map();
  for (const { name, data } of events) {
    if (name === 'message_start') message = structuredClone(data.message);
    else if (name === 'content_block_start') {
      assert.equal(data.index, message.content.length);
      message.content.push(structuredClone(data.content_block));
    } else if (name === 'content_block_delta') {
      const block = message.content.at(data.index);
      const d = data.delta;
      if (d.type === 'text_delta') block.text += d.text;
      else if (d.type === 'thinking_delta') block.thinking += d.thinking;
      else if (d.type === 'signature_delta') block.signature = d.signature;
      else if (d.type === 'input_json_delta') json.set(data.index, (json.get(data.index) ?? '') + d.partial_json);
    } else if (name === 'content_block_stop') {
      if (json.has(data.index)) message.content[data.index].input = JSON.parse(json.get(data.index));
    } else if (name === 'message_delta') {
      message.stop_reason = data.delta.stop_reason;
      message.stop_sequence = data.delta.stop_sequence;
      message.usage.output_tokens = data.usage.output_tokens;
    }
  }
  assert.equal(events.at(-1).name, 'message_stop');
  return message;
}

const WEATHER = {
  name: 'get_weather',
  description: 'Current weather',
  input_schema: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
};

test('a message is answered in Anthropic shape, with the served model and usage', async () => {
  const res = await post(ask('Hello there'));
  assert.equal(res.status, 200);
  const m = await res.json();
  assert.match(m.id, /^msg_[A-Za-z0-9]{24}$/);
  assert.deepEqual(
    { ...m, id: undefined },
    {
      id: undefined, type: 'message', role: 'assistant', model: `${CLAUDE}-served`,
      content: [{ type: 'text', text: 'Echo: Hello there' }], stop_reason: 'end_turn', stop_sequence: null,
      usage: { input_tokens: 3, cache_creation_input_tokens: 0, cache_read_input_tokens: 0, output_tokens: 3, service_tier: 'standard' },
    },
  );
  assert.equal(fake.requests[0].endpoint, CLAUDE);
  assert.deepEqual(fake.requests[0].usage, m.usage);
});

test('the stream has every event, in the order the SDK accumulates', async () => {
  const res = await post(ask('Hello there [fake:chunks=2]', { stream: true }));
  assert.equal(res.headers.get('content-type'), 'text/event-stream');
  const events = parseSse(await res.text());
  assert.deepEqual(events.map((e) => e.name), [
    'message_start', 'ping', 'content_block_start', 'content_block_delta', 'content_block_delta',
    'content_block_stop', 'message_delta', 'message_stop',
  ]);
  assert.deepEqual(events[0].data.message.usage, { input_tokens: 4, cache_creation_input_tokens: 0, cache_read_input_tokens: 0, output_tokens: 1 });
  const m = accumulate(events);
  assert.deepEqual(m.content, [{ type: 'text', text: 'Echo: Hello there' }]);
  assert.equal(m.usage.output_tokens, 3);
  // message_delta carries the output tokens only: input and cache tokens are in message_start.
  assert.deepEqual(events.at(-2).data.usage, { output_tokens: 3 });
});

test('thinking, redacted thinking and tool calls, streamed and not', async () => {
  const body = ask('Weather in Paris? [fake:tool] [fake:redacted]', {
    max_tokens: 4000, thinking: { type: 'enabled', budget_tokens: 2048 }, tools: [WEATHER],
  });
  const m = await (await post(body)).json();
  assert.deepEqual(m.content.map((b) => b.type), ['thinking', 'redacted_thinking', 'tool_use']);
  assert.match(m.content[0].signature, /^sig-/);
  assert.match(m.content[2].id, /^toolu_/);
  assert.deepEqual(m.content[2].input, { city: 'Paris' });
  assert.equal(m.stop_reason, 'tool_use');
  const streamed = accumulate(parseSse(await (await post({ ...body, stream: true })).text()));
  assert.deepEqual(streamed.content.map((b) => b.type), ['thinking', 'redacted_thinking', 'tool_use']);
  assert.equal(streamed.content[0].thinking, m.content[0].thinking);
  assert.equal(streamed.content[0].signature, m.content[0].signature);
  assert.deepEqual(streamed.content[2].input, { city: 'Paris' });
  // Two calls with parallel-tools; a forcing tool_choice calls without the directive.
  const two = await (await post(ask('x [fake:tool] [fake:parallel-tools]', { tools: [WEATHER] }))).json();
  assert.deepEqual(two.content.map((b) => b.name), ['get_weather', 'get_weather']);
  const forced = await (await post(ask('x', { tools: [WEATHER], tool_choice: { type: 'tool', name: 'get_weather' } }))).json();
  assert.equal(forced.stop_reason, 'tool_use');
  // Right after a tool result the model answers in text.
  const history = {
    model: CLAUDE, max_tokens: 200, tools: [WEATHER],
    messages: [
      { role: 'user', content: 'Weather in Paris? [fake:tool]' },
      { role: 'assistant', content: [{ type: 'tool_use', id: 'toolu_1', name: 'get_weather', input: { city: 'Paris' } }] },
      { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'toolu_1', content: '18C' }] },
    ],
  };
  const after = await (await post(history)).json();
  assert.deepEqual(after.content, [{ type: 'text', text: 'Echo: Weather in Paris?' }]);
});

test('a cache_control prefix is written once, then read', async () => {
  const system = [{ type: 'text', text: 'You are a careful assistant with a long system prompt.', cache_control: { type: 'ephemeral' } }];
  const first = await (await post(ask('Question one', { system }))).json();
  assert.deepEqual(
    [first.usage.input_tokens, first.usage.cache_creation_input_tokens, first.usage.cache_read_input_tokens],
    [3, 10, 0],
  );
  const second = await (await post(ask('Another question here', { system }))).json();
  assert.deepEqual(
    [second.usage.input_tokens, second.usage.cache_creation_input_tokens, second.usage.cache_read_input_tokens],
    [4, 0, 10],
  );
  // A second breakpoint later in the prompt: the cached part is read, the new part written.
  const messages = [
    { role: 'user', content: [{ type: 'text', text: 'Long document text goes here', cache_control: { type: 'ephemeral' } }] },
    { role: 'assistant', content: 'Noted.' },
    { role: 'user', content: 'Summarise it' },
  ];
  const third = await (await post({ model: CLAUDE, max_tokens: 50, system, messages })).json();
  assert.deepEqual(
    [third.usage.input_tokens, third.usage.cache_creation_input_tokens, third.usage.cache_read_input_tokens],
    [2 + 3, 6, 10],
  );
  // Streams report the same in message_start; another endpoint has its own cache.
  const streamed = parseSse(await (await post({ model: CLAUDE, max_tokens: 50, system, messages, stream: true })).text());
  assert.equal(streamed[0].data.message.usage.cache_read_input_tokens, 16);
  const other = await (await post({ ...ask('Question one', { system }), model: 'databricks-claude-haiku-4-5' })).json();
  assert.equal(other.usage.cache_creation_input_tokens, 10);
  fake.reset();
  const afterReset = await (await post(ask('Question one', { system }))).json();
  assert.equal(afterReset.usage.cache_read_input_tokens, 0);
});

test('limits and stop sequences give their stop reasons', async () => {
  const cut = await (await post(ask('one two three four five', { max_tokens: 2 }))).json();
  assert.deepEqual([cut.content[0].text, cut.stop_reason], ['Echo: one', 'max_tokens']);
  const stopped = await (await post(ask('alpha beta STOP gamma', { stop_sequences: ['STOP'] }))).json();
  assert.deepEqual([stopped.content[0].text, stopped.stop_reason, stopped.stop_sequence], ['Echo: alpha beta ', 'stop_sequence', 'STOP']);
});

test('Claude refuses in Anthropic shape; the front door in Databricks shape', async () => {
  const claude = async (body, message) => {
    const res = await post(body);
    assert.equal(res.status, 400, JSON.stringify(body));
    const err = await res.json();
    assert.equal(err.type, 'error');
    assert.equal(err.error.type, 'invalid_request_error');
    assert.match(err.error.message, message);
  };
  await claude({ ...ask('x'), stream_options: { include_usage: true } }, /stream_options: Extra inputs are not permitted/);
  await claude({ model: CLAUDE, messages: [{ role: 'user', content: 'x' }] }, /max_tokens: Field required/);
  await claude(ask([{ type: 'text', text: '' }]), /text content blocks must be non-empty/);
  await claude({ ...ask('x'), messages: [{ role: 'tool', content: 'x' }] }, /Input should be 'user', 'assistant' or 'system'/);
  await claude({ ...ask('x'), messages: [{ role: 'system', content: [{ type: 'image' }] }] }, /messages.0.content.0.type: Input should be 'text'/);
  await claude(ask('x', { thinking: { type: 'enabled', budget_tokens: 500 } }), /greater than or equal to 1024/);
  await claude(ask('x', { max_tokens: 2000, thinking: { type: 'enabled', budget_tokens: 2000 } }), /max_tokens` must be greater/);
  await claude(ask('x', { max_tokens: 3000, temperature: 0.5, thinking: { type: 'enabled', budget_tokens: 2000 } }), /temperature/);
  await claude(ask([{ type: 'image', source: { type: 'base64', media_type: 'image/bmp', data: 'x' } }]), /media_type/);
  const five = Array.from({ length: 5 }, (_, i) => ({ type: 'text', text: `t${i}`, cache_control: { type: 'ephemeral' } }));
  await claude(ask(five), /A maximum of 4 blocks with cache_control may be provided. Found 5./);
  await claude(
    { ...ask('x'), messages: [
      { role: 'user', content: 'x' },
      { role: 'assistant', content: [{ type: 'tool_use', id: 'toolu_1', name: 'f', input: {} }] },
      { role: 'user', content: 'no result' },
    ] },
    /tool_use` ids were found without `tool_result` blocks immediately after: toolu_1/,
  );
  await claude(ask([{ type: 'tool_result', tool_use_id: 'toolu_9', content: 'x' }]), /unexpected `tool_use_id`/);
  await claude(ask('x', { tools: [{ name: 'bad name', input_schema: {} }] }), /tools.0.custom.name/);

  const gpt = await post({ ...ask('x'), model: 'databricks-gpt-5-1' });
  assert.equal(gpt.status, 400);
  assert.equal((await gpt.json()).error_code, 'BAD_REQUEST');
  const missing = await post({ ...ask('x'), model: 'databricks-claude-does-not-exist' });
  assert.equal(missing.status, 404);
  assert.equal((await missing.json()).error_code, 'RESOURCE_DOES_NOT_EXIST');
  const noAuth = await post(ask('x'), { token: 'wrong' });
  assert.equal(noAuth.status, 403);
  const noCountTokens = await post(ask('x'), { path: '/anthropic/v1/messages/count_tokens' });
  assert.equal(noCountTokens.status, 404);
  // Lenient when told to be.
  fake.setStrict(false);
  assert.equal((await post({ ...ask('x'), stream_options: {} })).status, 200);
  fake.setStrict(true);
});

test('directed errors, and failures inside a stream', async () => {
  const cases = [[400, 'invalid_request_error'], [429, 'rate_limit_error'], [500, 'api_error'], [529, 'overloaded_error']];
  for (const [status, type] of cases) {
    const res = await post(ask(`x [fake:error=${status}] [fake:retry-after=3]`));
    assert.equal(res.status, status);
    const err = await res.json();
    assert.deepEqual([err.type, err.error.type], ['error', type]);
    assert.equal(res.headers.get('retry-after'), '3');
  }
  const dbShape = await (await post(ask('x [fake:error=429] [fake:error-body=databricks]'))).json();
  assert.equal(dbShape.error_code, 'REQUEST_LIMIT_EXCEEDED');
  const tooLong = await (await post(ask('x [fake:too-long]'))).json();
  assert.equal(tooLong.error.message, 'Input is too long for requested model.');

  const stream = (directives) => post(ask(`one two three four five six ${directives}`, { stream: true })).then((r) => r.text());
  const errored = parseSse(await stream('[fake:error-mid] [fake:chunks=6]'));
  assert.deepEqual(errored.at(-1).data, { type: 'error', error: { type: 'overloaded_error', message: 'Overloaded' } });
  assert.equal(errored.filter((e) => e.name === 'content_block_delta').length, 2);
  const truncated = parseSse(await stream('[fake:truncate] [fake:chunks=6]'));
  assert.notEqual(truncated.at(-1).name, 'message_stop');
  const malformed = await stream('[fake:malformed]');
  assert.match(malformed, /event: content_block_delta\ndata: \{"oops": \n\n/);
  const crlf = await stream('[fake:sse-crlf]');
  assert.match(crlf, /^event: message_start\r\ndata: /);
  await assert.rejects(stream('[fake:reset-mid] [fake:chunks=6]'));
});
