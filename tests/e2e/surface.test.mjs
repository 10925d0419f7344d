// The rest of the OpenAI surface on Databricks: embeddings, legacy completions, tools,
// reasoning effort, drop_params, and OAuth machine-to-machine credentials.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { startGateway, raw, userMessage, eventually, MASTER_KEY, WEATHER_TOOL } from '../support/gateway.mjs';

const OAUTH = { clientId: 'sp-client-7c1e', clientSecret: 'sp-secret-value-93d2' };

let gw;
before(async () => {
  gw = await startGateway({
    fake: { oauth: OAUTH },
    bindings: {
      TEST_CLIENT_ID: OAUTH.clientId,
      TEST_CLIENT_SECRET: OAUTH.clientSecret,
      TEST_WRONG_CLIENT_SECRET: 'not-the-secret-51ab',
    },
  });
});
after(async () => {
  await gw?.close();
});

test('embeddings: one text and a batch, as floats and as the SDK\'s base64, in order', async () => {
  gw.fake.reset();
  const client = gw.client();
  const one = await client.embeddings.create({ model: 'databricks-gte-large-en', input: 'hello world' });
  assert.equal(one.object, 'list');
  assert.equal(one.model, 'databricks-gte-large-en');
  assert.equal(one.data.length, 1);
  assert.equal(one.data[0].embedding.length, 1024);
  assert.ok(one.usage.prompt_tokens > 0);

  const texts = ['first text', 'second one', 'and a third'];
  const batch = await client.embeddings.create({ model: 'databricks-gte-large-en', input: texts });
  assert.deepEqual(batch.data.map((d) => d.index), [0, 1, 2]);
  // The SDK asked for base64 (its default) and decoded it; the floats must match Databricks'.
  const floats = await raw(gw, '/v1/embeddings', {
    body: { model: 'databricks-gte-large-en', input: texts, encoding_format: 'float' },
  });
  assert.equal(floats.status, 200);
  for (let i = 0; i < texts.length; i++) {
    const expected = floats.json.data[i].embedding;
    const got = batch.data[i].embedding;
    assert.equal(got.length, expected.length);
    assert.ok(got.every((x, j) => Math.abs(x - expected[j]) < 1e-6), `vector ${i} differs`);
  }
  assert.ok(!('encoding_format' in gw.fake.requests.at(-1).body), 'Databricks is never asked for base64');
});

test('embeddings: instruction is passed on; token ids for legacy completions are refused clearly', async () => {
  gw.fake.reset();
  const res = await raw(gw, '/embeddings', {
    body: { model: 'databricks-gte-large-en', input: 'query text', instruction: 'Represent this for retrieval' },
  });
  assert.equal(res.status, 200);
  assert.equal(gw.fake.requests[0].body.instruction, 'Represent this for retrieval');
  assert.equal(gw.fake.requests[0].path, '/serving-endpoints/embeddings');
  // Embeddings decode token ids (clients.test.mjs); a legacy completion prompt must be text.
  await assert.rejects(
    gw.client().completions.create({ model: 'legacy-completions', prompt: [1, 2, 3] }),
    (e) => e instanceof OpenAI.BadRequestError && e.param === 'prompt' && /token ids/.test(e.message),
  );
});

test('legacy completions, plain and streamed', async () => {
  const client = gw.client();
  const plain = await client.completions.create({ model: 'legacy-completions', prompt: 'Say hi', max_tokens: 20 });
  assert.equal(plain.object, 'text_completion');
  assert.equal(plain.model, 'legacy-completions');
  assert.equal(plain.choices[0].text, 'Echo: Say hi');
  const stream = await client.completions.create({ model: 'legacy-completions', prompt: 'Say hi', stream: true });
  let text = '';
  for await (const chunk of stream) text += chunk.choices[0]?.text ?? '';
  assert.equal(text, plain.choices[0].text);
});

test('tools: a tool call, its result sent back, and streamed argument fragments reassembled', async () => {
  gw.fake.reset();
  const client = gw.client();
  const messages = userMessage('What is the weather in Paris? [fake:tool]');
  const first = await client.chat.completions.create({ model: 'databricks-gpt-5-1', messages, tools: [WEATHER_TOOL], tool_choice: 'auto' });
  const choice = first.choices[0];
  assert.equal(choice.finish_reason, 'tool_calls');
  const [call] = choice.message.tool_calls;
  assert.equal(call.function.name, 'get_weather');
  assert.deepEqual(JSON.parse(call.function.arguments), { city: 'Paris' });
  assert.deepEqual(gw.fake.requests[0].body.tools, [WEATHER_TOOL]);
  assert.equal(gw.fake.requests[0].body.tool_choice, 'auto');

  const followUp = [...messages, choice.message, { role: 'tool', tool_call_id: call.id, content: '{"temp": 18}' }];
  await client.chat.completions.create({ model: 'databricks-gpt-5-1', messages: followUp, tools: [WEATHER_TOOL] });
  const sent = gw.fake.requests[1].body.messages;
  assert.equal(sent[2].role, 'tool');
  assert.equal(sent[2].tool_call_id, call.id);
  assert.equal(sent[1].tool_calls[0].id, call.id);

  const stream = client.chat.completions.stream({ model: 'databricks-gpt-5-1', messages, tools: [WEATHER_TOOL] });
  const final = await stream.finalChatCompletion();
  const streamed = final.choices[0].message.tool_calls[0];
  assert.equal(streamed.function.name, 'get_weather');
  assert.equal(streamed.function.arguments, '{"city":"Paris"}');
  assert.equal(final.choices[0].finish_reason, 'tool_calls');
});

test('reasoning_effort becomes a thinking budget on Claude, passes through on GPT-5, and thinking blocks round-trip', async () => {
  gw.fake.reset();
  const client = gw.client();
  const answer = await client.chat.completions.create({
    model: 'databricks-claude-sonnet-4-5',
    messages: userMessage('Think it through'),
    reasoning_effort: 'low',
    max_tokens: 100,
  });
  const sent = gw.fake.requests[0].body;
  assert.deepEqual(sent.thinking, { type: 'enabled', budget_tokens: 1024 });
  assert.equal(sent.max_tokens, 1124);
  assert.equal('reasoning_effort' in sent, false);
  const message = answer.choices[0].message;
  assert.ok(message.reasoning_content.length > 0);
  assert.match(message.thinking_blocks[0].signature, /^sig-/);

  await client.chat.completions.create({
    model: 'databricks-claude-sonnet-4-5',
    messages: [...userMessage('Think it through'), message, ...userMessage('And then?')],
  });
  const back = gw.fake.requests[1].body.messages[1];
  assert.equal(back.role, 'assistant');
  assert.equal(back.content[0].type, 'reasoning');
  assert.equal(back.content[0].summary[0].signature, message.thinking_blocks[0].signature);
  assert.deepEqual(back.content.at(-1), { type: 'text', text: message.content });

  await client.chat.completions.create({ model: 'databricks-gpt-5-1', messages: userMessage('x'), reasoning_effort: 'high' });
  assert.equal(gw.fake.requests[2].body.reasoning_effort, 'high');
  assert.equal('thinking' in gw.fake.requests[2].body, false);
});

test('drop_params removes what Databricks does not take, and the log says which', async () => {
  gw.fake.reset();
  const res = await raw(gw, '/v1/chat/completions', {
    body: { model: 'databricks-gpt-oss-120b', messages: userMessage('x'), user: 'u-1', seed: 7, temperature: 0.3, drop_params: true },
  });
  assert.equal(res.status, 200);
  const sent = gw.fake.requests[0].body;
  assert.equal('user' in sent || 'seed' in sent || 'drop_params' in sent, false);
  assert.equal(sent.temperature, 0.3);
  const line = gw.requestLogs().find((l) => l.call_id === res.headers.get('x-litellm-call-id'));
  assert.deepEqual(line.dropped_params.sort(), ['seed', 'user']);
  // Without drop_params, unknown parameters go through; additional_drop_params names some to drop.
  await raw(gw, '/v1/chat/completions', {
    body: { model: 'databricks-gpt-oss-120b', messages: userMessage('x'), user: 'u-1', temperature: 0.3, additional_drop_params: ['temperature'] },
  });
  assert.equal(gw.fake.requests[1].body.user, 'u-1');
  assert.equal('temperature' in gw.fake.requests[1].body, false);
  assert.equal('additional_drop_params' in gw.fake.requests[1].body, false);
});

test('OAuth: concurrent requests share one token; an expired token is refreshed once', async () => {
  gw.fake.reset();
  const client = gw.client();
  const ask = () => client.chat.completions.create({ model: 'oauth-model', messages: userMessage('via service principal') });
  const answers = await Promise.all(Array.from({ length: 10 }, ask));
  assert.ok(answers.every((a) => a.choices[0].message.content === 'Echo: via service principal'));
  assert.equal(gw.fake.tokensIssued, 1);
  assert.ok(gw.fake.requests.every((r) => /^Bearer eyJ/.test(r.headers.authorization)));

  gw.fake.expireTokens();
  const again = await Promise.all(Array.from({ length: 5 }, ask));
  assert.equal(again.length, 5);
  assert.equal(gw.fake.tokensIssued, 2, 'one refresh for every request that met the expired token');
});

test('OAuth: a wrong client secret is a clear error without the secret', async () => {
  const res = await raw(gw, '/v1/chat/completions', { body: { model: 'oauth-wrong-secret', messages: userMessage('x') } });
  assert.equal(res.status, 502);
  assert.match(res.json.error.message, /Databricks OAuth failed for service principal sp-client-7c1e/);
  assert.match(res.json.error.message, /invalid_client/);
  assert.equal(res.text.includes('not-the-secret-51ab'), false);
  assert.equal(gw.logs.join('\n').includes('not-the-secret-51ab'), false);
});

test("OAuth from the worker's DATABRICKS_CLIENT_ID / _SECRET when no token is set (LiteLLM's convention)", async () => {
  const other = await startGateway({
    fake: { oauth: OAUTH },
    bindings: { DATABRICKS_TOKEN: undefined, DATABRICKS_CLIENT_ID: OAUTH.clientId, DATABRICKS_CLIENT_SECRET: OAUTH.clientSecret },
  });
  try {
    // This model names neither api_key nor client credentials: LiteLLM's defaults apply.
    const res = await raw(other, '/v1/chat/completions', { body: { model: 'databricks-gpt-oss-120b', messages: userMessage('m2m') } });
    assert.equal(res.status, 200, res.text);
    assert.match(other.fake.requests[0].headers.authorization, /^Bearer eyJ/);
    assert.equal(other.fake.tokensIssued, 1);
  } finally {
    await other.close();
  }
});

test('spend and limits apply to embeddings and completions', async () => {
  const { key, token } = (await raw(gw, '/key/generate', { body: { max_budget: 1, rpm_limit: 2 } })).json;
  const client = gw.client({ apiKey: key });
  const emb = await client.embeddings.create({ model: 'databricks-gte-large-en', input: 'count my tokens' });
  const cmp = await client.completions.create({ model: 'legacy-completions', prompt: 'and mine', max_tokens: 10 });
  const expected = BigInt(emb.usage.prompt_tokens) * 129_990n + BigInt(cmp.usage.prompt_tokens) * 1_000_000n + BigInt(cmp.usage.completion_tokens) * 2_000_000n;
  const info = (await raw(gw, `/key/info?key=${key}`, { method: 'GET' })).json.info;
  assert.ok(Math.abs(info.spend - Number(expected) / 1e12) < 1e-15, `spend ${info.spend}`);
  const logs = (await raw(gw, `/spend/logs?api_key=${token}`, { method: 'GET' })).json;
  assert.deepEqual(logs.map((r) => r.model_group).sort(), ['databricks-gte-large-en', 'legacy-completions']);
  await assert.rejects(client.embeddings.create({ model: 'databricks-gte-large-en', input: 'third' }), OpenAI.RateLimitError);
});
