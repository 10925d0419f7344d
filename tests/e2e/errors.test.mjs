// Every failure a client can meet, through the built worker under workerd: OpenAI-shaped
// bodies, the right statuses, the SDK's typed exceptions, and no secret in any of them.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import {
  startGateway,
  raw,
  userMessage,
  eventually,
  MASTER_KEY,
  DATABRICKS_TOKEN,
  WRONG_TOKEN,
} from '../support/gateway.mjs';

let gw;
before(async () => {
  gw = await startGateway();
});
after(async () => {
  await gw?.close();
});

/** Asserts the OpenAI error envelope with the given status and type; returns the error. */
function assertError(res, status, type, param) {
  assert.equal(res.status, status, res.text);
  assert.match(res.headers.get('content-type'), /^application\/json/);
  assert.deepEqual(Object.keys(res.json), ['error']);
  const { error } = res.json;
  assert.deepEqual(Object.keys(error).sort(), ['code', 'message', 'param', 'type']);
  assert.equal(error.type, type);
  assert.equal(error.code, String(status));
  assert.equal(typeof error.message, 'string');
  assert.ok(error.message.length > 0);
  if (param !== undefined) assert.equal(error.param, param);
  for (const secret of [MASTER_KEY, DATABRICKS_TOKEN, WRONG_TOKEN]) {
    assert.equal(res.text.includes(secret), false, 'a secret leaked into an error');
    for (const [name, value] of res.headers) assert.equal(value.includes(secret), false, `secret in header ${name}`);
  }
  return error;
}

const chat = (content, model = 'databricks-gpt-5-1') =>
  gw.client().chat.completions.create({ model, messages: userMessage(content) });

// ---------------------------------------------------------------- the caller's mistakes

test('a missing key is 401, not 500', async () => {
  const res = await raw(gw, '/v1/chat/completions', { key: null, body: { model: 'databricks-gpt-5-1', messages: userMessage('x') } });
  assertError(res, 401, 'authentication_error', null);
  const basic = await raw(gw, '/v1/chat/completions', {
    key: null,
    headers: { authorization: 'Basic c2stMTIzNDo=' },
    body: { model: 'databricks-gpt-5-1', messages: userMessage('x') },
  });
  assertError(basic, 401, 'authentication_error');
  assert.equal(gw.fake.requests.length, 0);
});

test('a wrong key is 401 (AuthenticationError in the SDK) and never reaches Databricks', async () => {
  gw.fake.reset();
  const client = gw.client({ apiKey: 'sk-not-the-master-key' });
  await assert.rejects(
    client.chat.completions.create({ model: 'databricks-gpt-5-1', messages: userMessage('x') }),
    (e) => e instanceof OpenAI.AuthenticationError && e.status === 401 && !e.message.includes('sk-not-the-master-key'),
  );
  // A prefix of the real key is still wrong.
  const prefix = await raw(gw, '/v1/chat/completions', { key: MASTER_KEY.slice(0, -1), body: {} });
  assertError(prefix, 401, 'authentication_error');
  assert.equal(gw.fake.requests.length, 0);
});

test('malformed JSON, a non-object body and ill-typed fields are 400 naming the param', async () => {
  const cases = [
    ['{"model": "databricks-gpt-5-1", "messages": [', 'request_body'],
    ['[1, 2, 3]', 'request_body'],
    ['"just a string"', 'request_body'],
    ['', 'request_body'],
    [{ messages: userMessage('x') }, 'model'],
    [{ model: 42, messages: userMessage('x') }, 'model'],
    [{ model: 'databricks-gpt-5-1' }, 'messages'],
    [{ model: 'databricks-gpt-5-1', messages: 'hello' }, 'messages'],
    [{ model: 'databricks-gpt-5-1', messages: [] }, 'messages'],
    [{ model: 'databricks-gpt-5-1', messages: [{ content: 'no role' }] }, 'messages[0].role'],
    [{ model: 'databricks-gpt-5-1', messages: userMessage('x'), stream: 'yes' }, 'stream'],
    [{ model: 'databricks-gpt-5-1', messages: userMessage('x'), max_tokens: 0 }, 'max_tokens'],
  ];
  for (const [body, param] of cases) {
    const res = await raw(gw, '/v1/chat/completions', { body, headers: { 'content-type': 'application/json' } });
    assertError(res, 400, 'invalid_request_error', param);
  }
});

test('the SDK sees a missing messages field as BadRequestError', async () => {
  await assert.rejects(
    gw.client().chat.completions.create({ model: 'databricks-gpt-5-1' }),
    (e) => e instanceof OpenAI.BadRequestError && e.param === 'messages',
  );
});

test('an unknown model is 400 pointing to /v1/models', async () => {
  await assert.rejects(chat('hi', 'no-such-model'), (e) => {
    assert.ok(e instanceof OpenAI.BadRequestError);
    assert.equal(e.param, 'model');
    assert.match(e.message, /Invalid model name passed in model=no-such-model\. Call `\/v1\/models`/);
    return true;
  });
});

test('a body over 4 MB is 413 without reaching Databricks', async () => {
  gw.fake.reset();
  const big = JSON.stringify({ model: 'databricks-gpt-5-1', messages: userMessage('x'.repeat(4 * 1024 * 1024 + 10)) });
  const res = await raw(gw, '/v1/chat/completions', { body: big, headers: { 'content-type': 'application/json' } });
  assertError(res, 413, 'invalid_request_error', 'request_body');
  // A body just under the limit still goes through.
  const fits = JSON.stringify({ model: 'databricks-gpt-5-1', messages: userMessage('y'.repeat(3 * 1024 * 1024)) });
  const ok = await raw(gw, '/v1/chat/completions', { body: fits, headers: { 'content-type': 'application/json' } });
  assert.equal(ok.status, 200);
  assert.equal(gw.fake.requests.length, 1);
});

test('an unknown route is 404 and a wrong method 405', async () => {
  assertError(await raw(gw, '/v1/nothing-here', { body: {} }), 404, 'not_found_error');
  assertError(await raw(gw, '/', { method: 'GET' }), 404, 'not_found_error');
  assertError(await raw(gw, '/v1/chat/completions', { method: 'GET' }), 405, 'invalid_request_error');
  assertError(await raw(gw, '/v1/models', { method: 'DELETE' }), 405, 'invalid_request_error');
});

// ---------------------------------------------------------------- Databricks' failures

const UPSTREAM = [
  [400, OpenAI.BadRequestError, 'invalid_request_error'],
  [401, OpenAI.AuthenticationError, 'authentication_error'],
  [403, OpenAI.PermissionDeniedError, 'permission_error'],
  [429, OpenAI.RateLimitError, 'rate_limit_exceeded'],
  [500, OpenAI.InternalServerError, 'api_error'],
  [503, OpenAI.InternalServerError, 'api_error'],
];

for (const [status, ErrorClass, type] of UPSTREAM) {
  test(`Databricks ${status} keeps its status and message (${ErrorClass.name})`, async () => {
    const res = await raw(gw, '/v1/chat/completions', {
      body: { model: 'databricks-gpt-5-1', messages: userMessage(`fail [fake:error=${status}]`) },
    });
    const error = assertError(res, status, type);
    assert.match(error.message, new RegExp(`^Databricks returned ${status}`));
    assert.equal(res.headers.get('x-litellm-model-id'), 'gpt51-primary');
    await assert.rejects(chat(`fail [fake:error=${status}]`), (e) => e instanceof ErrorClass && e.status === status);
  });
}

test('Databricks 404 for a missing endpoint is NotFoundError with its message', async () => {
  await assert.rejects(chat('hi', 'missing-endpoint'), (e) => {
    assert.ok(e instanceof OpenAI.NotFoundError);
    assert.match(e.message, /Endpoint with name 'does-not-exist-endpoint' does not exist/);
    return true;
  });
});

test('a Databricks 429 is retried after its retry-after, then passed on', async () => {
  gw.fake.reset();
  const started = performance.now();
  const res = await raw(gw, '/v1/chat/completions', {
    body: { model: 'databricks-gpt-5-1', messages: userMessage('slow down [fake:error=429] [fake:retry-after=1]') },
  });
  const elapsed = performance.now() - started;
  const error = assertError(res, 429, 'rate_limit_exceeded');
  assert.equal(res.headers.get('retry-after'), '1');
  // Two retries, each after the second Databricks asked for.
  assert.equal(gw.fake.requests.length, 3);
  assert.ok(elapsed >= 2000 && elapsed < 4000, `elapsed ${elapsed.toFixed(0)} ms`);
  assert.match(error.message, /REQUEST_LIMIT_EXCEEDED/);
});

test('an HTML error page from the upstream becomes a clean JSON error', async () => {
  const res = await raw(gw, '/v1/chat/completions', {
    body: { model: 'databricks-gpt-5-1', messages: userMessage('lb page [fake:error=502] [fake:error-body=html]') },
  });
  const error = assertError(res, 502, 'api_error');
  assert.match(error.message, /non-JSON error body/);
});

test('the token is scrubbed from upstream messages that echo it', async () => {
  const res = await raw(gw, '/v1/chat/completions', {
    body: { model: 'databricks-gpt-5-1', messages: userMessage('echo [fake:error=400] [fake:echo-token]') },
  });
  const error = assertError(res, 400, 'invalid_request_error');
  assert.match(error.message, /\[REDACTED\]/);
});

test('a token Databricks refuses is 403 without the token in the answer', async () => {
  gw.fake.reset();
  const res = await raw(gw, '/v1/chat/completions', {
    body: { model: 'wrong-token-model', messages: userMessage('hi') },
  });
  assertError(res, 403, 'permission_error');
  assert.equal(gw.fake.requests[0].headers.authorization, `Bearer ${WRONG_TOKEN}`);
});

test('malformed and truncated answers are 502', async () => {
  for (const directive of ['malformed', 'truncate']) {
    const res = await raw(gw, '/v1/chat/completions', {
      body: { model: 'databricks-gpt-5-1', messages: userMessage(`bad answer [fake:${directive}]`) },
    });
    assert.match(assertError(res, 502, 'api_error').message, /malformed answer/);
  }
});

test('an unreachable upstream is 502; a reset connection too', async () => {
  const res = await raw(gw, '/v1/chat/completions', { body: { model: 'unreachable-model', messages: userMessage('hi') } });
  assert.match(assertError(res, 502, 'api_error').message, /Could not reach Databricks/);
  const reset = await raw(gw, '/v1/chat/completions', {
    body: { model: 'databricks-gpt-5-1', messages: userMessage('drop it [fake:reset]') },
  });
  assertError(reset, 502, 'api_error');
});

test('an upstream slower than the timeout is 504 and the upstream request is aborted', async () => {
  gw.fake.reset();
  const started = performance.now();
  const res = await raw(gw, '/v1/chat/completions', {
    body: { model: 'slow-model', messages: userMessage('take your time [fake:delay=4000]') },
  });
  const elapsed = performance.now() - started;
  const error = assertError(res, 504, 'api_error');
  assert.match(error.message, /timeout of 1 s/);
  // The test config retries twice: three attempts of 1 s each, every one aborted.
  assert.equal(res.headers.get('x-litellm-attempted-retries'), '2');
  assert.ok(elapsed < 4500, `answered after ${elapsed.toFixed(0)} ms, three attempts of 1 s`);
  await eventually(() => gw.fake.abortedCount === 3, 3000, 'the fake to see every attempt aborted');
  await assert.rejects(chat('again [fake:delay=4000]', 'slow-model'), (e) => e instanceof OpenAI.APIError && e.status === 504);
});

test('a streamed request that Databricks refuses gets the JSON error, not a stream', async () => {
  const stream = gw.client().chat.completions.create({
    model: 'databricks-gpt-5-1',
    stream: true,
    messages: userMessage('no stream for you [fake:error=429]'),
  });
  await assert.rejects(stream, (e) => e instanceof OpenAI.RateLimitError);
});

test('a missing worker secret is reported by name, not by value', async () => {
  const broken = await startGateway({ bindings: { DATABRICKS_TOKEN: undefined } });
  try {
    const res = await raw(broken, '/v1/chat/completions', {
      body: { model: 'databricks-gpt-5-1', messages: userMessage('hi') },
    });
    const error = assertError(res, 500, 'api_error');
    assert.match(error.message, /`DATABRICKS_TOKEN` is not set/);
    assert.equal(broken.fake.requests.length, 0);
  } finally {
    await broken.close();
  }
});
