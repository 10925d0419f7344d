// A rate limit's window ends on the clock: a key limited to 1 request a minute waits out its
// retry-after (about 60 s) and passes again. In a file of its own, with its own gateway, so that
// the minute of waiting runs beside the other files instead of after limits.test.mjs's tests
// (tests/run.mjs starts the files that took longest last time first).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startGateway, raw, userMessage } from '../support/gateway.mjs';

let gw;
before(async () => {
  gw = await startGateway();
});
after(async () => {
  await gw?.close();
});

async function generate(fields) {
  const res = await raw(gw, '/key/generate', { body: fields });
  assert.equal(res.status, 200, res.text);
  return res.json;
}

const send = (key, content) =>
  raw(gw, '/v1/chat/completions', { key, body: { model: 'databricks-gpt-5-1', messages: userMessage(content) } });

test('after the window, a rate-limited key passes again, when its retry-after says', async () => {
  const { key } = await generate({ rpm_limit: 1 });
  assert.equal((await send(key, 'first')).status, 200);
  const limited = await send(key, 'second');
  assert.equal(limited.status, 429);
  const retryAfter = Number(limited.headers.get('retry-after'));
  assert.ok(retryAfter >= 1 && retryAfter <= 60, `retry-after ${retryAfter}`);
  await new Promise((r) => setTimeout(r, retryAfter * 1000 + 200));
  const res = await send(key, 'a new minute');
  assert.equal(res.status, 200, res.text);
});
