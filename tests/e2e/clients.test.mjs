// What popular clients rely on beyond plain chat, through the built worker under workerd:
// OpenAI-shaped stream deltas and usage, embeddings sent as token ids, no client retries after
// the gateway's own, LiteLLM's fields on history, and structured output.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { getEncoding } from 'js-tiktoken';
import { startGateway, raw, userMessage, MASTER_KEY, WEATHER_TOOL } from '../support/gateway.mjs';

let gw;
before(async () => {
  gw = await startGateway();
});
after(async () => {
  await gw?.close();
});

/** Posts a streamed request with fetch; returns the parsed chunks (without [DONE]) and whether [DONE] ended it. */
async function streamChunks(pathname, body) {
  const res = await fetch(`${gw.url}${pathname}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${MASTER_KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify({ stream: true, ...body }),
  });
  assert.equal(res.status, 200);
  const events = (await res.text())
    .split('\n\n')
    .filter((e) => e.trim())
    .map((e) => e.replace(/^data: /, ''));
  assert.equal(events.at(-1), '[DONE]');
  return events.slice(0, -1).map((e) => JSON.parse(e));
}

const lastUpstreamUsage = () => gw.fake.requests.at(-1).usage;

test('streamed tool-call fragments leave out null keys, and the SDK stream helper reassembles them', async () => {
  gw.fake.reset();
  const messages = userMessage('Weather in Paris? [fake:tool]');
  const chunks = await streamChunks('/v1/chat/completions', { model: 'databricks-gpt-5-1', messages, tools: [WEATHER_TOOL] });
  const calls = chunks.flatMap((c) => c.choices[0]?.delta?.tool_calls ?? []);
  assert.ok(calls.length >= 3, JSON.stringify(calls));
  assert.equal(calls[0].type, 'function');
  assert.equal(calls[0].function.name, 'get_weather');
  // As OpenAI: after the first, a fragment is {index, function: {arguments}} and nothing else.
  for (const call of calls.slice(1)) assert.deepEqual(Object.keys(call).sort(), ['function', 'index']);
  for (const call of calls.slice(1)) assert.deepEqual(Object.keys(call.function), ['arguments']);
  const deltas = chunks.map((c) => c.choices[0]?.delta ?? {});
  assert.ok(deltas.every((d) => Object.values(d).every((v) => v !== null)), 'no null in any delta');

  const stream = gw.client().chat.completions.stream({ model: 'databricks-gpt-5-1', messages, tools: [WEATHER_TOOL] });
  const final = await stream.finalChatCompletion();
  const [call] = final.choices[0].message.tool_calls;
  assert.equal(call.type, 'function');
  assert.equal(call.function.name, 'get_weather');
  assert.deepEqual(JSON.parse(call.function.arguments), { city: 'Paris' });
});

test('a stream shows no usage unless asked; asked, one last chunk without choices carries it', async () => {
  const body = { model: 'databricks-gpt-5-1', messages: userMessage('count my tokens please') };
  gw.fake.reset();
  for (const extra of [{}, { stream_options: { include_usage: false } }]) {
    const chunks = await streamChunks('/v1/chat/completions', { ...body, ...extra });
    assert.ok(chunks.every((c) => !('usage' in c)), JSON.stringify(chunks));
    assert.ok(chunks.every((c) => c.choices.length === 1));
  }
  const chunks = await streamChunks('/v1/chat/completions', { ...body, stream_options: { include_usage: true } });
  const withUsage = chunks.filter((c) => c.usage);
  assert.equal(withUsage.length, 1);
  assert.equal(chunks.at(-1), withUsage[0]);
  assert.deepEqual(withUsage[0].choices, []);
  assert.deepEqual(withUsage[0].usage, lastUpstreamUsage());
  assert.equal(withUsage[0].id, chunks[0].id);
  assert.equal(withUsage[0].model, 'databricks-gpt-5-1');
  assert.ok(chunks.slice(0, -1).every((c) => c.usage === null), 'usage: null on the others, as OpenAI');
  // Databricks is always asked, so that every stream is accounted for.
  assert.ok(gw.fake.requests.every((r) => r.body.stream_options.include_usage === true));
});

test('legacy completion streams show usage the same way', async () => {
  gw.fake.reset();
  const body = { model: 'legacy-completions', prompt: 'Say hi' };
  const plain = await streamChunks('/v1/completions', body);
  assert.ok(plain.every((c) => !('usage' in c)));
  const asked = await streamChunks('/v1/completions', { ...body, stream_options: { include_usage: true } });
  assert.deepEqual(asked.at(-1).choices, []);
  assert.equal(asked.at(-1).object, 'text_completion');
  assert.deepEqual(asked.at(-1).usage, lastUpstreamUsage());
  assert.equal(asked.filter((c) => c.usage).length, 1);
});

test('the SDK sums a streamed call to its real usage (tool calls too)', async () => {
  gw.fake.reset();
  for (const [content, tools] of [['sum my usage', undefined], ['Weather? [fake:tool]', [WEATHER_TOOL]]]) {
    const stream = await gw.client().chat.completions.create({
      model: 'databricks-gpt-5-1',
      messages: userMessage(content),
      tools,
      stream: true,
      stream_options: { include_usage: true },
    });
    const total = { prompt_tokens: 0, completion_tokens: 0, total_tokens: 0 };
    for await (const chunk of stream) {
      for (const k of Object.keys(total)) total[k] += chunk.usage?.[k] ?? 0;
    }
    const real = lastUpstreamUsage();
    assert.deepEqual(total, { prompt_tokens: real.prompt_tokens, completion_tokens: real.completion_tokens, total_tokens: real.total_tokens });
  }
});

test('embeddings take token ids (cl100k_base, as LangChain sends them) and forward their text', async () => {
  gw.fake.reset();
  const enc = getEncoding('cl100k_base');
  const texts = ['hello world', 'Grüße, 世界! ✓ <|endoftext|>'];
  const ids = texts.map((t) => enc.encode(t, 'all'));
  const client = gw.client();
  const byIds = await client.embeddings.create({ model: 'databricks-gte-large-en', input: ids, encoding_format: 'float' });
  assert.deepEqual(gw.fake.requests[0].body.input, texts);
  const byText = await client.embeddings.create({ model: 'databricks-gte-large-en', input: texts, encoding_format: 'float' });
  assert.deepEqual(byIds.data.map((d) => d.embedding), byText.data.map((d) => d.embedding));
  // One list of ids is one input.
  await client.embeddings.create({ model: 'databricks-gte-large-en', input: ids[0] });
  assert.equal(gw.fake.requests[2].body.input, 'hello world');
});

test('a token id cl100k_base does not have is a 400 naming input', async () => {
  gw.fake.reset();
  for (const input of [[[15339, 1917], [100300]], [100261], [-1], [[]]]) {
    const res = await raw(gw, '/v1/embeddings', { body: { model: 'databricks-gte-large-en', input } });
    assert.equal(res.status, 400, JSON.stringify(input));
    assert.equal(res.json.error.param, 'input');
    assert.equal(res.json.error.type, 'invalid_request_error');
  }
  assert.equal(gw.fake.requests.length, 0);
});

test('once the gateway has retried, the answer tells the client not to retry, and passes on retry-after', async () => {
  gw.fake.reset();
  const res = await raw(gw, '/v1/chat/completions', {
    body: { model: 'databricks-gpt-5-1', messages: userMessage('fail [fake:error=503] [fake:retry-after=7]') },
  });
  assert.equal(res.status, 503);
  assert.equal(res.headers.get('x-should-retry'), 'false');
  assert.equal(res.headers.get('retry-after'), '7');
  assert.match(res.headers.get('access-control-expose-headers'), /x-should-retry/);

  // The SDK's own two retries do not multiply the gateway's three attempts.
  gw.fake.reset();
  const client = new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: MASTER_KEY, maxRetries: 2 });
  await assert.rejects(
    client.chat.completions.create({ model: 'databricks-gpt-5-1', messages: userMessage('fail [fake:error=500]') }),
    (e) => e instanceof OpenAI.InternalServerError,
  );
  assert.equal(gw.fake.requests.length, 3, 'num_retries: 2 in the gateway, none in the client');
});

test('fields only LiteLLM understands are not forwarded with the history', async () => {
  gw.fake.reset();
  const messages = [
    { role: 'user', content: 'Weather?' },
    {
      role: 'assistant',
      content: null,
      provider_specific_fields: { refusal: null },
      reasoning_content: 'The user wants weather.',
      tool_calls: [
        {
          id: 'call_1',
          type: 'function',
          function: { name: 'get_weather', arguments: '{"city":"Paris"}', provider_specific_fields: {} },
          provider_specific_fields: {},
        },
      ],
    },
    { role: 'tool', tool_call_id: 'call_1', content: '18 C' },
    { role: 'user', content: 'Thanks' },
  ];
  const answer = await gw.client().chat.completions.create({ model: 'databricks-gpt-5-1', messages, tools: [WEATHER_TOOL] });
  assert.equal(answer.choices[0].message.content, 'Echo: Thanks');
  const sent = gw.fake.requests[0].body.messages[1];
  assert.deepEqual(sent, {
    role: 'assistant',
    content: null,
    tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } }],
  });
});

test('structured output: json_object and json_schema answers parse and match the schema, streamed too', async () => {
  const client = gw.client();
  const object = await client.chat.completions.create({
    model: 'databricks-gpt-5-1',
    messages: userMessage('Give me JSON'),
    response_format: { type: 'json_object' },
  });
  assert.equal(typeof JSON.parse(object.choices[0].message.content), 'object');

  const schema = {
    type: 'object',
    properties: {
      name: { type: 'string' },
      age: { type: 'integer', minimum: 18 },
      tags: { type: 'array', items: { type: 'string' } },
      pet: { $ref: '#/$defs/Pet' },
      nickname: { anyOf: [{ type: 'string' }, { type: 'null' }] },
    },
    required: ['name', 'age', 'tags', 'pet', 'nickname'],
    additionalProperties: false,
    $defs: { Pet: { type: 'object', properties: { kind: { enum: ['cat', 'dog'] } }, required: ['kind'], additionalProperties: false } },
  };
  const response_format = { type: 'json_schema', json_schema: { name: 'person', strict: true, schema } };
  const answer = await client.chat.completions.create({ model: 'databricks-gpt-5-1', messages: userMessage('Ann'), response_format });
  const person = JSON.parse(answer.choices[0].message.content);
  assert.equal(typeof person.name, 'string');
  assert.ok(Number.isInteger(person.age) && person.age >= 18);
  assert.ok(Array.isArray(person.tags));
  assert.equal(person.pet.kind, 'cat');
  assert.equal(typeof person.nickname, 'string');

  const chunks = await streamChunks('/v1/chat/completions', { model: 'databricks-gpt-5-1', messages: userMessage('Ann'), response_format });
  assert.deepEqual(JSON.parse(chunks.map((c) => c.choices[0]?.delta?.content ?? '').join('')), person);
});

test('a request refused before its body is read leaves the connection usable for the next', async () => {
  // The static assets (the token table) put a router worker in front of the gateway; a body it
  // left unread made workerd close the connection under the client's next request.
  const body = { model: 'databricks-gpt-5-1', messages: userMessage('x'.repeat(2000)) };
  const virtual = (await raw(gw, '/key/generate', { body: {} })).json.key;
  for (let i = 0; i < 100; i++) {
    assert.equal((await raw(gw, '/v1/chat/completions', { key: 'sk-not-a-key', body })).status, 401);
    assert.equal((await raw(gw, '/v1/nowhere', { body })).status, 404);
    // A virtual key may not manage keys: refused before the body is read.
    assert.equal((await raw(gw, '/key/generate', { key: virtual, body: { key_alias: 'x'.repeat(2000) } })).status, 403);
    assert.equal((await raw(gw, '/v1/chat/completions', { body })).status, 200);
  }
});
