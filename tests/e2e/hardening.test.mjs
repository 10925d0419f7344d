// Hardening found by review (issue 9, point 6), through the built worker under workerd.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { startGateway, raw, userMessage, eventually, MASTER_KEY } from '../support/gateway.mjs';

let gw;
before(async () => {
  gw = await startGateway();
});
after(async () => {
  await gw?.close();
});

const admin = (path, body) => raw(gw, path, { body });
const adminGet = (path) => raw(gw, path, { method: 'GET' });
const unique = (prefix) => `${prefix}-${randomUUID().slice(0, 8)}`;
const chatBody = { model: 'databricks-gpt-5-1', messages: userMessage('hi') };

async function generate(fields = {}) {
  const res = await admin('/key/generate', fields);
  assert.equal(res.status, 200, res.text);
  return res.json;
}

/** Asserts an OpenAI-shaped error with this status and param. */
function assertError(res, status, param) {
  assert.equal(res.status, status, res.text);
  assert.deepEqual(Object.keys(res.json.error).sort(), ['code', 'message', 'param', 'type']);
  assert.equal(res.json.error.type, 'invalid_request_error');
  assert.equal(res.json.error.code, String(status));
  assert.equal(res.json.error.param, param);
}

/**
 * POSTs a chat body with no Content-Length (chunked): `total` bytes of filler in 64 KiB
 * chunks, or without end when `total` is Infinity (until the answer has come).
 */
async function postChunked(total, { prefix = new Uint8Array(), key = MASTER_KEY } = {}) {
  const chunk = new Uint8Array(64 * 1024).fill(0x20);
  let sent = 0;
  let answered = false;
  let closed = false;
  const body = new ReadableStream({
    start(controller) {
      if (prefix.length) controller.enqueue(prefix);
    },
    pull(controller) {
      if (answered || sent >= total) {
        closed = true;
        controller.close();
        return;
      }
      controller.enqueue(chunk);
      sent += chunk.length;
    },
  });
  const res = await fetch(`${gw.url}/v1/chat/completions`, {
    method: 'POST',
    body,
    duplex: 'half',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
  });
  const closedBeforeAnswer = closed;
  answered = true;
  const json = await res.json();
  return { status: res.status, json, closedBeforeAnswer };
}

// ---------------------------------------------------------------- bodies without a length

test('a chunked body over 4 MB gets an OpenAI-shaped 413', async () => {
  const forwarded = gw.fake.requests.length;
  const res = await postChunked(5 * 1024 * 1024);
  assertError(res, 413, 'request_body');
  assert.equal(gw.fake.requests.length, forwarded, 'nothing reached Databricks');
});

test('an endless chunked body is refused at the limit, not read to its end', async () => {
  // The upload only stops once the answer is in: a gateway reading it all would never answer.
  const res = await postChunked(Infinity);
  assertError(res, 413, 'request_body');
  assert.equal(res.closedBeforeAnswer, false);
});

test('a small chunked body works', async () => {
  const res = await postChunked(0, { prefix: new TextEncoder().encode(JSON.stringify(chatBody)) });
  assert.equal(res.status, 200, JSON.stringify(res.json));
  assert.equal(res.json.choices[0].message.content, 'Echo: hi');
});
