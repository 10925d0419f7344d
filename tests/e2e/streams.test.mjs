// Streams as real upstreams send them, chosen per test with the fake's directives: usage in
// every chunk, only at the end, or never (then the call is charged by estimate); parallel tool
// calls; an error in the middle; redacted thinking. What the client sees, and what is charged.

import { test, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { startGateway, raw, userMessage, eventually, MASTER_KEY, WEATHER_TOOL } from '../support/gateway.mjs';

let gw;
before(async () => {
  gw = await startGateway();
});
after(async () => {
  await gw?.close();
});
beforeEach(() => gw.fake.reset());

/** Streams with plain fetch; returns the response, the parsed chunks, and the raw events. */
async function stream(key, model, content, extra = {}) {
  const res = await fetch(`${gw.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key ?? MASTER_KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model, stream: true, messages: userMessage(content), ...extra }),
  });
  const text = await res.text();
  const events = text.split('\n\n').filter((e) => e.startsWith('data: ')).map((e) => e.slice(6));
  const chunks = events.filter((e) => e !== '[DONE]').map((e) => JSON.parse(e));
  return { res, events, chunks };
}

async function generate() {
  const res = await raw(gw, '/key/generate', { body: { max_budget: 5 } });
  assert.equal(res.status, 200, res.text);
  return res.json;
}

/** The spend-log row of the call with this id, once settled. */
async function spendRow(token, callId) {
  let row;
  await eventually(async () => {
    const rows = (await raw(gw, `/spend/logs?api_key=${token}`, { method: 'GET' })).json;
    row = rows.find((r) => r.call_id === callId || r.request_id === callId);
    return row;
  }, 3000, 'the spend-log row');
  return row;
}

test('usage only in a final usage-only chunk: the client gets it once, and it is charged exactly', async () => {
  const { key, token } = await generate();
  const { res, chunks, events } = await stream(key, 'databricks-gpt-5-1', 'tell me [fake:usage=final] [fake:chunks=4]', {
    stream_options: { include_usage: true },
  });
  assert.equal(res.status, 200);
  assert.equal(events.at(-1), '[DONE]');
  const withUsage = chunks.filter((c) => c.usage);
  assert.equal(withUsage.length, 1);
  const sent = gw.fake.requests[0].usage;
  assert.deepEqual(
    { p: withUsage[0].usage.prompt_tokens, c: withUsage[0].usage.completion_tokens },
    { p: sent.prompt_tokens, c: sent.completion_tokens },
  );
  const row = await spendRow(token, res.headers.get('x-litellm-call-id'));
  assert.equal(row.prompt_tokens, sent.prompt_tokens);
  assert.equal(row.completion_tokens, sent.completion_tokens);
  assert.ok(!row.estimated);
});

test('a stream with no usage at all is charged by estimate, and marked so', async () => {
  const { key, token } = await generate();
  const content = 'describe the sea in detail [fake:usage=none] [fake:chunks=5]';
  const { res, chunks, events } = await stream(key, 'databricks-gpt-5-1', content, { stream_options: { include_usage: true } });
  assert.equal(res.status, 200);
  assert.equal(events.at(-1), '[DONE]');
  assert.equal(chunks.filter((c) => c.usage).length, 0, 'no usage invented for the client');
  const said = chunks.map((c) => c.choices[0]?.delta?.content ?? '').join('');
  assert.ok(said.length > 0);
  const row = await spendRow(token, res.headers.get('x-litellm-call-id'));
  assert.equal(row.estimated, true);
  // About four characters a token, for what was said and for the prompt's text.
  assert.equal(row.completion_tokens, Math.ceil(said.length / 4));
  assert.ok(row.prompt_tokens >= Math.ceil(content.length / 4));
  assert.ok(row.spend > 0);
});

test('a streamed tool call without usage is charged for its arguments', async () => {
  const { key, token } = await generate();
  const { res, chunks } = await stream(key, 'databricks-gpt-5-1', 'weather? [fake:tool] [fake:usage=none]', { tools: [WEATHER_TOOL] });
  assert.equal(res.status, 200);
  const args = chunks.flatMap((c) => c.choices[0]?.delta?.tool_calls ?? []).map((t) => t.function?.arguments ?? '').join('');
  assert.deepEqual(JSON.parse(args), { city: 'Paris' });
  const row = await spendRow(token, res.headers.get('x-litellm-call-id'));
  assert.equal(row.estimated, true);
  assert.ok(row.completion_tokens >= Math.ceil(args.length / 4), `${row.completion_tokens} for ${args.length} characters`);
});

test('parallel tool calls stream interleaved and reassemble into two calls', async () => {
  const client = gw.client();
  const s = await client.chat.completions.create({
    model: 'databricks-gpt-5-1',
    stream: true,
    tools: [WEATHER_TOOL],
    messages: userMessage('weather in two cities [fake:tool] [fake:parallel-tools]'),
  });
  const calls = [];
  let finish;
  for await (const chunk of s) {
    for (const d of chunk.choices[0]?.delta?.tool_calls ?? []) {
      // No key arrives as null after the first fragment (the SDK helpers would overwrite).
      for (const [k, v] of Object.entries(d)) assert.notEqual(v, null, `delta key ${k} is null`);
      calls[d.index] ??= { id: '', name: '', args: '' };
      if (d.id) calls[d.index].id = d.id;
      if (d.function?.name) calls[d.index].name = d.function.name;
      calls[d.index].args += d.function?.arguments ?? '';
    }
    finish = chunk.choices[0]?.finish_reason ?? finish;
  }
  assert.equal(calls.length, 2);
  assert.notEqual(calls[0].id, calls[1].id);
  for (const call of calls) {
    assert.equal(call.name, 'get_weather');
    assert.deepEqual(JSON.parse(call.args), { city: 'Paris' });
  }
  assert.equal(finish, 'tool_calls');
});

test('an error in the middle of a stream reaches the client as an error event, then [DONE]; what was produced is charged', async () => {
  const { key, token } = await generate();
  const { res, events, chunks } = await stream(key, 'databricks-gpt-5-1', 'long answer [fake:error-mid] [fake:chunks=5]');
  assert.equal(res.status, 200);
  assert.equal(events.at(-1), '[DONE]');
  const error = chunks.find((c) => c.error);
  assert.ok(error, 'an error event');
  assert.equal(error.error.type, 'api_error');
  assert.ok(chunks.indexOf(error) > 0, 'after some content');
  const row = await spendRow(token, res.headers.get('x-litellm-call-id'));
  assert.ok(row.completion_tokens > 0, 'the tokens produced before the error are charged');
  assert.equal(row.status, 'failure');
});

test('redacted thinking comes back as a redacted_thinking block, plain and streamed', async () => {
  const body = {
    model: 'databricks-claude-sonnet-4-5',
    messages: userMessage('think secretly [fake:reasoning] [fake:redacted]'),
    reasoning_effort: 'low',
  };
  const plain = await raw(gw, '/v1/chat/completions', { body });
  assert.equal(plain.status, 200, plain.text);
  const blocks = plain.json.choices[0].message.thinking_blocks;
  assert.deepEqual(blocks.find((b) => b.type === 'redacted_thinking'), { type: 'redacted_thinking', data: 'EncryptedThinking==' });
  assert.ok(blocks.some((b) => b.type === 'thinking' && b.thinking));

  const streamed = await stream(undefined, 'databricks-claude-sonnet-4-5', 'think secretly [fake:reasoning] [fake:redacted]', {
    reasoning_effort: 'low',
  });
  assert.equal(streamed.res.status, 200);
  const redacted = streamed.chunks
    .flatMap((c) => c.choices[0]?.delta?.thinking_blocks ?? [])
    .filter((b) => b.type === 'redacted_thinking');
  assert.deepEqual(redacted, [{ type: 'redacted_thinking', data: 'EncryptedThinking==' }]);
});
