// Streaming chat through the built worker under workerd: the SDK's stream, and the raw SSE
// bytes a curl user sees.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { startGateway, MASTER_KEY, userMessage, eventually, rawStream as rawStreamOf } from '../support/gateway.mjs';

let gw;
before(async () => {
  gw = await startGateway();
});
after(async () => {
  await gw?.close();
});

/** Streams with the SDK; returns the chunks with their arrival times (ms since the call). */
async function sdkStream(model, content, extra = {}) {
  const started = performance.now();
  const stream = await gw.client().chat.completions.create({ model, stream: true, messages: userMessage(content), ...extra });
  const chunks = [];
  for await (const chunk of stream) chunks.push({ at: performance.now() - started, chunk });
  return chunks;
}

const rawStream = (model, content) => rawStreamOf(gw, model, content);

const textOf = (chunks) => chunks.map(({ chunk }) => chunk.choices[0]?.delta?.content ?? '').join('');

test('chunks reach the client as Databricks produces them, not buffered', async () => {
  gw.fake.reset();
  const started = performance.now();
  const chunks = await sdkStream('databricks-gpt-5-1', 'one two three four [fake:chunks=4] [fake:spacing=300]');
  const content = chunks.filter(({ chunk }) => chunk.choices[0]?.delta?.content);
  assert.equal(content.length, 4);
  // The fake waits 300 ms between events: each content chunk must reach the client before the
  // fake has even written the next one (the fake runs in this process, on the same clock). A
  // buffering gateway would deliver them all at once at the end. Unlike the gaps between
  // arrivals, this holds however late a busy machine runs this process's reads.
  const written = gw.fake.requests[0].eventsWritten.filter(({ data }) => data !== '[DONE]' && JSON.parse(data).choices?.[0]?.delta?.content);
  assert.equal(written.length, 4);
  for (let i = 0; i + 1 < content.length; i++) {
    const ahead = written[i + 1].at - (started + content[i].at);
    assert.ok(ahead > 0, `chunk ${i} reached the client ${(-ahead).toFixed(0)} ms after the fake wrote chunk ${i + 1}`);
  }
  assert.ok(chunks[0].at < content.at(-1).at - 800, 'the first chunk arrived well before the last');
});

test('the streamed text and model name are those of the upstream, ending with one [DONE]', async () => {
  gw.fake.reset();
  const { res, events } = await rawStream('databricks-gpt-5-1', 'stream me please [fake:chunks=3]');
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type'), /^text\/event-stream/);
  assert.match(res.headers.get('x-litellm-call-id'), /^[0-9a-f-]{36}$/);
  assert.equal(events.at(-1), '[DONE]');
  assert.equal(events.filter((e) => e === '[DONE]').length, 1);
  const chunks = events.slice(0, -1).map((e) => JSON.parse(e));
  assert.ok(chunks.every((c) => c.model === 'databricks-gpt-5-1' && c.object === 'chat.completion.chunk'));
  const text = chunks.map((c) => c.choices[0]?.delta?.content ?? '').join('');
  assert.equal(text, 'Echo: stream me please');
  // Not asked for (stream_options.include_usage): no usage, as OpenAI (see clients.test.mjs).
  assert.ok(chunks.every((c) => !('usage' in c)));
  assert.equal(chunks.at(-1).choices[0].finish_reason, 'stop');
  // The gateway asks Databricks for usage on every stream, so the stream can be accounted for.
  assert.deepEqual(gw.fake.requests[0].body.stream_options, { include_usage: true });
});

test('a stream is logged once it ends, with its usage', async () => {
  const res = await fetch(`${gw.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${MASTER_KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'databricks-gpt-5-1', stream: true, messages: userMessage('log this stream') }),
  });
  const callId = res.headers.get('x-litellm-call-id');
  await res.text();
  await eventually(() => gw.requestLogs().some((l) => l.call_id === callId), 3000, 'the stream log line');
  const line = gw.requestLogs().find((l) => l.call_id === callId);
  assert.equal(line.stream, true);
  assert.equal(line.status, 200);
  assert.ok(line.completion_tokens > 0);
  assert.ok(line.chunks >= 3);
  assert.equal(line.error_type, undefined);
});

test('reasoning streams as reasoning_content deltas, then text', async () => {
  const chunks = await sdkStream('databricks-gpt-oss-120b', 'Think about tides');
  const reasoning = chunks.map(({ chunk }) => chunk.choices[0]?.delta?.reasoning_content ?? '').join('');
  assert.equal(reasoning, 'Thinking about: Think about tides');
  assert.equal(textOf(chunks), 'Echo: Think about tides');
  // No delta reaches the SDK with content still in Databricks' list form.
  assert.ok(chunks.every(({ chunk }) => !Array.isArray(chunk.choices[0]?.delta?.content)));
  const signatures = chunks.flatMap(({ chunk }) => chunk.choices[0]?.delta?.thinking_blocks ?? []).filter((b) => b.signature);
  assert.equal(signatures.length, 1);
  assert.match(signatures[0].signature, /^sig-/);
});

test('chunks with empty choices and deltas without content pass without error', async () => {
  const chunks = await sdkStream('databricks-gpt-5-1', 'odd chunks [fake:empty-choices]', {
    stream_options: { include_usage: true },
  });
  assert.equal(textOf(chunks), 'Echo: odd chunks');
  // Databricks' chunk without choices carried only usage: the one the client sees is the last.
  assert.equal(chunks.filter(({ chunk }) => chunk.choices.length === 0).length, 1);
  assert.ok(chunks.at(-1).chunk.usage.total_tokens > 0);
});

test('[DONE] is added when Databricks does not send it', async () => {
  const { events } = await rawStream('databricks-gpt-5-1', 'no done here [fake:no-done]');
  assert.equal(events.at(-1), '[DONE]');
  assert.equal(events.filter((e) => e === '[DONE]').length, 1);
  assert.equal(events.some((e) => e.includes('"error"')), false);
});

test('events split across reads and CRLF line ends are reassembled', async () => {
  for (const directive of ['[fake:sse-split]', '[fake:sse-crlf]', '[fake:sse-split] [fake:sse-crlf]']) {
    const chunks = await sdkStream('databricks-gpt-5-1', `héllo wörld ✓ ${directive}`);
    assert.equal(textOf(chunks), 'Echo: héllo wörld ✓', directive);
  }
});

for (const [directive, why] of [
  ['truncate', 'ended the stream before the answer was complete'],
  ['reset-mid', 'stream'],
  ['malformed', 'malformed stream chunk'],
]) {
  test(`a stream that breaks mid-way (${directive}) ends cleanly with an error event, then [DONE]`, async () => {
    const { res, events } = await rawStream('databricks-gpt-5-1', `break this stream please [fake:${directive}]`);
    assert.equal(res.status, 200);
    assert.equal(events.at(-1), '[DONE]');
    const error = JSON.parse(events.at(-2)).error;
    assert.equal(error.type, 'api_error');
    assert.equal(error.code, '502');
    assert.ok(error.message.includes(why), error.message);
    // The SDK surfaces the error event as an APIError instead of returning a silently cut answer.
    await assert.rejects(sdkStream('databricks-gpt-5-1', `break again [fake:${directive}]`), OpenAI.APIError);
  });
}

test('a stream whose upstream stalls past stream_timeout is cut and the upstream aborted', async () => {
  gw.fake.reset();
  const { events } = await rawStream('slow-model', 'stall [fake:chunks=3] [fake:spacing=2500]');
  const error = JSON.parse(events.at(-2)).error;
  assert.equal(error.code, '504');
  assert.match(error.message, /stream_timeout/);
  assert.equal(events.at(-1), '[DONE]');
  await eventually(() => gw.fake.abortedCount >= 1, 3000, 'the fake to see the upstream request aborted');
});

test('a client that hangs up mid-stream cancels the upstream request', async () => {
  gw.fake.reset();
  const controller = new AbortController();
  const res = await fetch(`${gw.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${MASTER_KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify({
      model: 'databricks-gpt-5-1',
      stream: true,
      messages: userMessage('a long answer nobody reads [fake:chunks=20] [fake:spacing=200]'),
    }),
    signal: controller.signal,
  });
  const callId = res.headers.get('x-litellm-call-id');
  const reader = res.body.getReader();
  await reader.read(); // the first chunk arrived: the stream is live
  controller.abort();
  await eventually(() => gw.fake.abortedCount === 1, 3000, 'the fake to see the upstream request cancelled');
  assert.equal(gw.fake.requests.length, 1);
  // The call is still logged, with what Databricks produced before it was cancelled.
  await eventually(() => gw.requestLogs().some((l) => l.call_id === callId), 3000, 'the log line');
  const line = gw.requestLogs().find((l) => l.call_id === callId);
  assert.equal(line.client_disconnected, true);
  assert.ok(line.completion_tokens >= 1 && line.completion_tokens < 20, `completion_tokens ${line.completion_tokens}`);
});
