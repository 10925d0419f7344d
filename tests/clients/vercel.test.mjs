// The Vercel AI SDK (ai + @ai-sdk/openai, pinned in tests/clients/package.json) against the built
// worker under workerd. Its OpenAI provider speaks the Responses API by default: the gateway
// serves chat completions, so models are created with `.chat(...)`.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createOpenAI } from '@ai-sdk/openai';
import { embed, embedMany, generateText, jsonSchema, stepCountIs, streamText, tool } from 'ai';
import { startGateway, MASTER_KEY } from '../support/gateway.mjs';

let gw;
let provider;
before(async () => {
  gw = await startGateway();
  provider = createOpenAI({ baseURL: `${gw.url}/v1`, apiKey: MASTER_KEY });
});
after(async () => {
  await gw?.close();
});

const chat = () => provider.chat('databricks-gpt-5-1');
const lastUpstreamUsage = () => gw.fake.requests.findLast((r) => r.usage).usage;

const weather = tool({
  description: 'The weather in a city',
  inputSchema: jsonSchema({ type: 'object', properties: { city: { type: 'string' } }, required: ['city'] }),
  execute: async ({ city }) => `18 C in ${city}`,
});

function assertUsage(usage) {
  const real = lastUpstreamUsage();
  assert.equal(usage.inputTokens, real.prompt_tokens);
  assert.equal(usage.outputTokens, real.completion_tokens);
  assert.equal(usage.totalTokens, real.total_tokens);
}

test('generateText answers with the text and the usage', async () => {
  gw.fake.reset();
  const { text, usage } = await generateText({ model: chat(), prompt: 'Hello', maxRetries: 0 });
  assert.equal(text, 'Echo: Hello');
  assertUsage(usage);
});

test('streamText streams the text and reports the call\'s real usage', async () => {
  gw.fake.reset();
  const result = streamText({ model: chat(), prompt: 'count my tokens please', maxRetries: 0 });
  let text = '';
  for await (const part of result.textStream) text += part;
  assert.equal(text, 'Echo: count my tokens please');
  assertUsage(await result.usage);
});

test('tools: a call is made, its result sent back, streamed too', async () => {
  gw.fake.reset();
  const { toolCalls } = await generateText({ model: chat(), prompt: 'Weather in Paris? [fake:tool]', tools: { get_weather: weather }, maxRetries: 0 });
  assert.equal(toolCalls[0].toolName, 'get_weather');
  assert.deepEqual(toolCalls[0].input, { city: 'Paris' });

  // Two steps: the call, then its result goes back and the model answers.
  gw.fake.reset();
  const steps = await generateText({
    model: chat(),
    prompt: 'Weather in Paris? [fake:tool]',
    tools: { get_weather: weather },
    stopWhen: stepCountIs(2),
    maxRetries: 0,
  });
  assert.equal(steps.steps.length, 2);
  const sent = gw.fake.requests[1].body.messages;
  assert.equal(sent.at(-1).role, 'tool');
  assert.equal(sent.at(-1).content, '18 C in Paris');

  gw.fake.reset();
  const streamed = streamText({ model: chat(), prompt: 'Weather in Paris? [fake:tool]', tools: { get_weather: weather }, maxRetries: 0 });
  const calls = await streamed.toolCalls;
  assert.deepEqual(calls[0].input, { city: 'Paris' });
  assertUsage(await streamed.usage);
});

test('embed and embedMany', async () => {
  const model = provider.embedding('databricks-gte-large-en');
  const { embedding } = await embed({ model, value: 'hello world', maxRetries: 0 });
  assert.equal(embedding.length, 1024);
  const { embeddings } = await embedMany({ model, values: ['hello world', 'bye'], maxRetries: 0 });
  assert.deepEqual(embeddings[0], embedding);
  assert.equal(embeddings.length, 2);
});
