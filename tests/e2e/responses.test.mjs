// OpenAI's Responses API (`POST /v1/responses`, what Codex CLI speaks) through the built worker
// under workerd, with the official `openai` SDK: native on GPT deployments (Databricks'
// `/serving-endpoints/responses`), translated to chat completions on the others, with keys,
// budgets, spend, routing and fallbacks exactly as a chat call gets them.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { startGateway, raw, eventually, MASTER_KEY } from '../support/gateway.mjs';

const GPT = 'databricks-gpt-5-1';
const CLAUDE = 'databricks-claude-sonnet-4-5';
const GPT_OSS = 'databricks-gpt-oss-120b';
const WEATHER = {
  type: 'function',
  name: 'get_weather',
  description: 'The weather in a city',
  strict: false,
  parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
};
// cached-gpt's prices (tests/fixtures/litellm_config.yaml), in pico-dollars a token.
const CACHED_GPT = { input: 1_000_000n, output: 10_000_000n, cacheRead: 100_000n };

let gw;
let client;
before(async () => {
  gw = await startGateway();
  client = gw.client();
});
after(async () => {
  await gw?.close();
});

const sentTo = (path) => gw.fake.requests.filter((r) => r.path === `/serving-endpoints/${path}`);

async function generate(fields) {
  const res = await raw(gw, '/key/generate', { body: fields });
  assert.equal(res.status, 200, res.text);
  return res.json;
}
const keyInfo = async (key) => (await raw(gw, `/key/info?key=${key}`, { method: 'GET' })).json.info;
const spendLogs = async (token) => (await raw(gw, `/spend/logs?api_key=${token}`, { method: 'GET' })).json;

/** The request log line of the call with this id, once the worker wrote it. */
async function logLine(callId) {
  let line;
  await eventually(() => (line = gw.requestLogs().find((l) => l.call_id === callId)), 3000, `log line ${callId}`);
  return line;
}

/** A raw `/v1/responses` stream (what Codex reads): the response and its events, in order. */
async function rawEvents(body, key = MASTER_KEY, path = '/v1/responses') {
  const res = await fetch(`${gw.url}${path}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ stream: true, ...body }),
  });
  const text = await res.text();
  const events = text
    .split('\n\n')
    .filter((e) => e.trim())
    .map((e) => {
      const name = /^event: (.*)$/m.exec(e)?.[1];
      const data = JSON.parse(/^data: (.*)$/m.exec(e)?.[1] ?? 'null');
      assert.equal(name, data?.type, `the event name is its type: ${e}`);
      return data;
    });
  return { res, events, types: events.map((e) => e.type) };
}

/** The event types of one message item, as OpenAI streams it. */
const MESSAGE_EVENTS = (deltas) => [
  'response.output_item.added',
  'response.content_part.added',
  ...Array(deltas).fill('response.output_text.delta'),
  'response.output_text.done',
  'response.content_part.done',
  'response.output_item.done',
];

test('responses.create on a GPT model is forwarded natively, with LiteLLM headers and usage', async () => {
  gw.fake.reset();
  const { data: r, response } = await client.responses
    .create({ model: GPT, instructions: 'Be brief.', input: 'Say hi', max_output_tokens: 256 })
    .withResponse();
  assert.equal(r.object, 'response');
  assert.match(r.id, /^resp_/);
  assert.equal(r.status, 'completed');
  assert.equal(r.model, GPT, 'the model as the client named it');
  assert.equal(r.output_text, 'Echo: Say hi');
  assert.deepEqual(r.output.map((i) => i.type), ['reasoning', 'message']);
  assert.equal(r.usage.total_tokens, r.usage.input_tokens + r.usage.output_tokens);
  const [sent] = sentTo('responses');
  assert.equal(gw.fake.requests.length, 1);
  assert.equal(sent.body.model, GPT);
  assert.equal(sent.body.store, false);
  assert.equal(sent.body.instructions, 'Be brief.');
  assert.equal(sent.body.max_output_tokens, 256);
  assert.deepEqual(sent.usage, r.usage);
  assert.equal(response.headers.get('x-litellm-model-group'), GPT);
  assert.equal(response.headers.get('x-litellm-model-id'), 'gpt51-primary');
  assert.match(response.headers.get('x-litellm-call-id'), /^[0-9a-f-]{36}$/);
  assert.ok(Number(response.headers.get('x-litellm-response-cost')) > 0);
  assert.equal(response.headers.get('x-litellm-attempted-retries'), '0');
  // The log line: the route, the deployment and the tokens.
  const line = await logLine(response.headers.get('x-litellm-call-id'));
  assert.equal(line.route, '/v1/responses');
  assert.equal(line.deployment, 'gpt51-primary');
  assert.equal(line.prompt_tokens, r.usage.input_tokens);
  assert.equal(line.completion_tokens, r.usage.output_tokens);
});

test('responses.create on Claude and gpt-oss is translated to chat completions and back', async () => {
  for (const model of [CLAUDE, GPT_OSS]) {
    gw.fake.reset();
    const r = await client.responses.create({
      model,
      instructions: 'Be brief.',
      input: [{ role: 'user', content: [{ type: 'input_text', text: 'Say hi' }] }],
      max_output_tokens: 100,
    });
    assert.match(r.id, /^resp_/);
    assert.equal(r.object, 'response');
    assert.equal(r.model, model);
    assert.equal(r.status, 'completed');
    assert.equal(r.output_text, 'Echo: Say hi');
    assert.equal(r.store, false);
    const [sent] = sentTo('chat/completions');
    assert.equal(gw.fake.requests.length, 1, 'one chat call, nothing on /responses');
    assert.equal(sent.body.model, model);
    assert.deepEqual(sent.body.messages, [
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: 'Say hi' },
    ]);
    assert.equal(sent.body.max_tokens, 100);
    assert.equal(r.usage.input_tokens, sent.usage.prompt_tokens);
    assert.equal(r.usage.output_tokens, sent.usage.completion_tokens);
  }
  // /responses answers without /v1 too.
  const bare = await raw(gw, '/responses', { body: { model: CLAUDE, input: 'hello' } });
  assert.equal(bare.status, 200, bare.text);
  assert.equal(bare.json.output[0].content[0].text, 'Echo: hello');
});

test('responses.stream: finalResponse and OpenAI\'s event order, native and translated', async () => {
  for (const model of [GPT, CLAUDE]) {
    const stream = client.responses.stream({ model, input: 'Count to three [fake:chunks=3]' });
    const deltas = [];
    stream.on('response.output_text.delta', (e) => deltas.push(e.delta));
    const final = await stream.finalResponse();
    assert.equal(final.status, 'completed');
    assert.equal(final.output_text, 'Echo: Count to three');
    assert.equal(deltas.join(''), 'Echo: Count to three');
    assert.ok(final.usage.input_tokens > 0 && final.usage.output_tokens > 0, JSON.stringify(final.usage));
    assert.equal(final.model, model);

    const { res, events, types } = await rawEvents({ model, input: 'Count to three [fake:chunks=3]' });
    assert.equal(res.headers.get('content-type'), 'text/event-stream');
    assert.equal(res.headers.get('x-litellm-model-group'), model);
    // GPT-5 reasons first (an item with no summary unless asked); Claude answers directly.
    const reasoning = model === GPT ? ['response.output_item.added', 'response.output_item.done'] : [];
    assert.deepEqual(types, [
      'response.created',
      'response.in_progress',
      ...reasoning,
      ...MESSAGE_EVENTS(3),
      'response.completed',
    ]);
    assert.deepEqual(events.map((e) => e.sequence_number), events.map((_, i) => i), 'numbered from 0');
    const completed = events.at(-1).response;
    assert.equal(completed.model, model);
    assert.equal(completed.usage.total_tokens, completed.usage.input_tokens + completed.usage.output_tokens);
    assert.equal(events[0].response.id, completed.id);
  }
});

test('function calls, and their outputs sent back in a second turn, native and translated', async () => {
  for (const [model, endpoint] of [[GPT, GPT], [CLAUDE, CLAUDE]]) {
    gw.fake.reset();
    gw.fake.override(endpoint, '[fake:tool]');
    const input = [{ role: 'user', content: 'What is the weather in Paris?' }];
    const first = await client.responses.create({ model, input, tools: [WEATHER] });
    const call = first.output.find((i) => i.type === 'function_call');
    assert.ok(call, JSON.stringify(first.output));
    assert.equal(call.name, 'get_weather');
    assert.deepEqual(JSON.parse(call.arguments), { city: 'Paris' });
    assert.match(call.call_id, /\S/);

    // The streamed call: its arguments arrive as deltas.
    const stream = client.responses.stream({ model, input, tools: [WEATHER] });
    const argDeltas = [];
    stream.on('response.function_call_arguments.delta', (e) => argDeltas.push(e.delta));
    const streamed = await stream.finalResponse();
    const streamedCall = streamed.output.find((i) => i.type === 'function_call');
    assert.equal(argDeltas.join(''), streamedCall.arguments);
    assert.deepEqual(JSON.parse(streamedCall.arguments), { city: 'Paris' });

    gw.fake.override(endpoint, null);
    gw.fake.reset();
    const second = await client.responses.create({
      model,
      tools: [WEATHER],
      input: [...input, ...first.output, { type: 'function_call_output', call_id: call.call_id, output: 'Sunny, 21 C' }],
    });
    assert.equal(second.status, 'completed');
    if (model === GPT) {
      assert.equal(second.output_text, 'Tool output: Sunny, 21 C');
      const [sent] = sentTo('responses');
      assert.deepEqual(sent.body.input.at(-1), { type: 'function_call_output', call_id: call.call_id, output: 'Sunny, 21 C' });
    } else {
      assert.match(second.output_text, /^Echo: /);
      const [sent] = sentTo('chat/completions');
      const [assistant, tool] = sent.body.messages.slice(-2);
      assert.equal(assistant.role, 'assistant');
      assert.equal(assistant.tool_calls[0].id, call.call_id);
      assert.equal(assistant.tool_calls[0].function.name, 'get_weather');
      assert.deepEqual(tool, { role: 'tool', tool_call_id: call.call_id, content: 'Sunny, 21 C' });
    }
  }
});

test('typed errors: 401, 429 with retry-after, 400 for previous_response_id', async () => {
  const stranger = gw.client({ apiKey: 'sk-not-a-key' });
  await assert.rejects(stranger.responses.create({ model: GPT, input: 'hi' }), OpenAI.AuthenticationError);

  const { key } = await generate({ rpm_limit: 1 });
  const limited = gw.client({ apiKey: key });
  await limited.responses.create({ model: GPT, input: 'first' });
  await assert.rejects(limited.responses.create({ model: GPT, input: 'second' }), (e) => {
    assert.ok(e instanceof OpenAI.RateLimitError, `${e.constructor.name}: ${e.message}`);
    assert.ok(Number(e.headers.get('retry-after')) >= 1);
    return true;
  });
  // Streams are refused before they start, the same way.
  await assert.rejects(limited.responses.stream({ model: CLAUDE, input: 'third' }).finalResponse(), OpenAI.RateLimitError);

  gw.fake.reset();
  await assert.rejects(
    client.responses.create({ model: GPT, input: 'and then?', previous_response_id: 'resp_123' }),
    (e) => {
      assert.ok(e instanceof OpenAI.BadRequestError, `${e.constructor.name}: ${e.message}`);
      assert.equal(e.param, 'previous_response_id');
      assert.match(e.message, /whole conversation/);
      return true;
    },
  );
  assert.equal(gw.fake.requests.length, 0, 'refused before Databricks');
  await assert.rejects(client.responses.create({ model: 'nope', input: 'hi' }), OpenAI.BadRequestError);
  // An upstream failure after the gateway's retries: typed, and not to be retried again.
  await assert.rejects(client.responses.create({ model: 'missing-endpoint', input: 'hi' }), OpenAI.NotFoundError);
});

test('a virtual key: models, budget hold, spend in /key/info and /spend/logs, cached tokens priced', async () => {
  const { key, token } = await generate({ models: ['cached-gpt', CLAUDE], max_budget: 1 });
  const mine = gw.client({ apiKey: key });
  await assert.rejects(mine.responses.create({ model: GPT, input: 'hi' }), OpenAI.AuthenticationError);

  gw.fake.reset();
  const instructions = 'You are a careful assistant who answers in one short sentence.';
  const ask = () => mine.responses.create({ model: 'cached-gpt', instructions, input: 'What is a prefix cache?' });
  const cold = await ask();
  const warm = await ask();
  assert.equal(cold.usage.input_tokens_details.cached_tokens, 0);
  assert.equal(warm.usage.input_tokens_details.cached_tokens, warm.usage.input_tokens, 'the same prompt, cached');
  // The budget held an output bound the key can pay for, as max_output_tokens.
  for (const sent of sentTo('responses')) assert.ok(Number.isInteger(sent.body.max_output_tokens), JSON.stringify(sent.body));
  const streamed = await mine.responses.stream({ model: CLAUDE, input: 'and a stream' }).finalResponse();

  const cost = (u, prices) =>
    BigInt(u.input_tokens - u.input_tokens_details.cached_tokens) * prices.input +
    BigInt(u.input_tokens_details.cached_tokens) * prices.cacheRead +
    BigInt(u.output_tokens) * prices.output;
  const gptPico = cost(cold.usage, CACHED_GPT) + cost(warm.usage, CACHED_GPT);
  assert.ok(cost(warm.usage, CACHED_GPT) < cost(cold.usage, CACHED_GPT), 'a cached prompt costs less');

  await eventually(async () => (await spendLogs(token)).length === 3, 3000, 'three spend rows');
  const rows = await spendLogs(token);
  const byId = Object.fromEntries(rows.map((r) => [r.request_id, r]));
  assert.equal(byId[warm.id].cache_read_input_tokens, warm.usage.input_tokens);
  assert.equal(byId[warm.id].prompt_tokens, warm.usage.input_tokens, 'cached tokens are part of the prompt, once');
  assert.equal(byId[cold.id].cache_read_input_tokens, 0);
  assert.equal(byId[warm.id].model_group, 'cached-gpt');
  assert.equal(BigInt(Math.round((byId[cold.id].spend + byId[warm.id].spend) * 1e12)), gptPico);
  const streamedRow = byId[streamed.id];
  assert.ok(streamedRow, `a row for the streamed response ${streamed.id}: ${JSON.stringify(rows)}`);
  assert.equal(streamedRow.stream, true);
  assert.equal(streamedRow.prompt_tokens, streamed.usage.input_tokens);
  assert.equal(streamedRow.completion_tokens, streamed.usage.output_tokens);
  const info = await keyInfo(key);
  const total = rows.reduce((sum, r) => sum + r.spend, 0);
  assert.ok(Math.abs(info.spend - total) < 1e-12, `spend ${info.spend}, rows ${total}`);

  // A budget that pays for a few tokens only: asking for more than it affords is refused, and
  // without max_output_tokens the gateway imposes what it affords, translated or not.
  const poor = gw.client({ apiKey: (await generate({ models: ['cached-gpt', CLAUDE], max_budget: 0.002 })).key });
  await assert.rejects(poor.responses.create({ model: CLAUDE, input: 'hi', max_output_tokens: 5000 }), (e) => {
    assert.ok(e instanceof OpenAI.BadRequestError, `${e.constructor.name}: ${e.message}`);
    assert.match(e.message, /Budget has been exceeded/);
    return true;
  });
  gw.fake.reset();
  assert.equal((await poor.responses.create({ model: CLAUDE, input: 'hi' })).status, 'completed');
  assert.equal((await poor.responses.create({ model: 'cached-gpt', input: 'hi' })).status, 'completed');
  const [chat] = sentTo('chat/completions');
  const [native] = sentTo('responses');
  assert.ok(chat.body.max_tokens > 0 && chat.body.max_tokens < 200, `max_tokens ${chat.body.max_tokens}`);
  assert.ok(native.body.max_output_tokens > 0 && native.body.max_output_tokens < 300, `max_output_tokens ${native.body.max_output_tokens}`);
});

test('a fallback from a GPT group to a Claude group translates, streamed or not', async () => {
  gw.fake.reset();
  gw.fake.override('gpt-family-b', '[fake:error=503]');
  try {
    const { data: r, response } = await client.responses
      .create({ model: 'gpt-then-claude', input: 'who answers?' })
      .withResponse();
    assert.equal(r.output_text, 'Echo: who answers?');
    assert.equal(r.model, 'claude-then-gpt', 'the group that answered');
    assert.match(r.id, /^resp_/);
    assert.equal(response.headers.get('x-litellm-attempted-fallbacks'), '1');
    assert.equal(response.headers.get('x-litellm-model-group'), 'gpt-then-claude');
    const gpt = gw.fake.requests.filter((q) => q.endpoint === 'gpt-family-b');
    const claude = gw.fake.requests.filter((q) => q.endpoint === 'claude-family-a');
    assert.ok(gpt.length >= 1 && gpt.every((q) => q.path === '/serving-endpoints/responses'));
    assert.equal(claude.length, 1);
    assert.equal(claude[0].path, '/serving-endpoints/chat/completions');

    gw.fake.reset();
    const { types, events } = await rawEvents({ model: 'gpt-then-claude', input: 'stream it [fake:chunks=2]' });
    assert.deepEqual(types, ['response.created', 'response.in_progress', ...MESSAGE_EVENTS(2), 'response.completed']);
    assert.equal(events.at(-1).response.output[0].content[0].text, 'Echo: stream it');
  } finally {
    gw.fake.override('gpt-family-b', null);
  }
});

test('hosted tools a translation cannot carry are left out and named in the log line', async () => {
  const { response } = await client.responses
    .create({ model: CLAUDE, input: 'search?', tools: [WEATHER, { type: 'web_search' }] })
    .withResponse();
  const line = await logLine(response.headers.get('x-litellm-call-id'));
  assert.ok(line.left_out?.some((w) => /web_search/.test(w)), JSON.stringify(line));
});

test('a client that hangs up mid-stream stops the upstream and is charged for what was produced', async () => {
  const { key, token } = await generate({ max_parallel_requests: 1, max_budget: 5 });
  gw.fake.reset();
  const controller = new AbortController();
  const res = await fetch(`${gw.url}/v1/responses`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: GPT, stream: true, input: 'a b c d e f g h i j k l [fake:chunks=12] [fake:spacing=150]' }),
    signal: controller.signal,
  });
  const reader = res.body.getReader();
  await reader.read();
  controller.abort();
  await eventually(() => gw.fake.abortedCount === 1, 4000, 'the upstream request cancelled');
  await eventually(async () => (await keyInfo(key)).spend > 0, 4000, 'the spend recorded');
  const [row] = await spendLogs(token);
  assert.equal(row.stream, true);
  assert.equal(row.estimated, true, 'the native stream carries usage only at its end: estimated');
  assert.ok(row.prompt_tokens > 0);
  // The slot is free again.
  const next = await gw.client({ apiKey: key }).responses.create({ model: GPT, input: 'next' });
  assert.equal(next.status, 'completed');
});
