// Virtual keys: LiteLLM's /key/* API and using keys, through the built worker under workerd
// with its real KV namespace.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import OpenAI from 'openai';
import { startGateway, raw, userMessage, MASTER_KEY } from '../support/gateway.mjs';

let gw;
before(async () => {
  gw = await startGateway();
});
after(async () => {
  await gw?.close();
});

const sha256 = (s) => createHash('sha256').update(s).digest('hex');
const admin = (path, body) => raw(gw, path, { body });
const adminGet = (path) => raw(gw, path, { method: 'GET' });
const chatAs = (key, model = 'databricks-gpt-5-1', content = 'hi') =>
  gw.client({ apiKey: key }).chat.completions.create({ model, messages: userMessage(content) });

async function generate(fields = {}) {
  const res = await admin('/key/generate', fields);
  assert.equal(res.status, 200, res.text);
  return res.json;
}

/** Asserts the call fails with a 401 whose message matches `pattern`. */
async function refused(key, pattern, model) {
  await assert.rejects(chatAs(key, model), (e) => {
    assert.ok(e instanceof OpenAI.AuthenticationError, `${e.constructor.name}: ${e.message}`);
    assert.match(e.message, pattern);
    return true;
  });
}

test('a key goes through its whole life cycle', async () => {
  // generate: the secret is returned once, the token is its SHA-256
  const created = await generate({ key_alias: 'life-cycle', models: ['databricks-gpt-5-1'], metadata: { team: 'a' } });
  assert.match(created.key, /^sk-[A-Za-z0-9_-]{32}$/);
  assert.equal(created.token, sha256(created.key));
  assert.equal(created.key_name, `sk-...${created.key.slice(-4)}`);
  assert.equal(created.key_alias, 'life-cycle');
  assert.deepEqual(created.models, ['databricks-gpt-5-1']);
  assert.equal(created.expires, null);
  const key = created.key;

  // use: an allowed model works, another is refused
  assert.equal((await chatAs(key)).choices[0].message.content, 'Echo: hi');
  await refused(key, /not allowed to access model=databricks-claude-sonnet-4-5/, 'databricks-claude-sonnet-4-5');
  const denied = await raw(gw, '/v1/chat/completions', {
    key,
    body: { model: 'databricks-claude-sonnet-4-5', messages: userMessage('x') },
  });
  assert.equal(denied.json.error.type, 'key_model_access_denied');

  // update the models: now both work
  const updated = await admin('/key/update', { key, models: ['databricks-gpt-5-1', 'databricks-claude-sonnet-4-5'] });
  assert.equal(updated.status, 200, updated.text);
  assert.equal(updated.json.key_alias, 'life-cycle');
  assert.equal((await chatAs(key, 'databricks-claude-sonnet-4-5')).model, 'databricks-claude-sonnet-4-5');

  // block, unblock
  assert.equal((await admin('/key/block', { key })).json.blocked, true);
  await refused(key, /blocked/);
  assert.equal((await admin('/key/unblock', { key: created.token })).json.blocked, false);
  await chatAs(key);

  // regenerate: new secret, same settings; the old secret says what happened
  const regen = await admin('/key/regenerate', { key });
  assert.equal(regen.status, 200, regen.text);
  const newKey = regen.json.key;
  assert.notEqual(newKey, key);
  assert.equal(regen.json.key_alias, 'life-cycle');
  assert.deepEqual(regen.json.models, ['databricks-gpt-5-1', 'databricks-claude-sonnet-4-5']);
  assert.deepEqual(regen.json.metadata, { team: 'a' });
  assert.equal(regen.json.created_at, created.created_at);
  await refused(key, /regenerated/);
  await chatAs(newKey);

  // delete: refused, and the alias is free again
  const deleted = await admin('/key/delete', { keys: [newKey] });
  assert.equal(deleted.status, 200, deleted.text);
  assert.deepEqual(deleted.json.deleted_keys, [sha256(newKey)]);
  await refused(newKey, /deleted/);
  await generate({ key_alias: 'life-cycle' });
});

test('an unknown key is refused without naming any other key', async () => {
  await refused('sk-never-issued-0000', /^401 Invalid API key\.$/);
});

test('a key with a short duration expires', async () => {
  const { key, expires } = await generate({ duration: '2s' });
  assert.ok(Date.parse(expires) > Date.now());
  await chatAs(key);
  await new Promise((r) => setTimeout(r, Date.parse(expires) - Date.now() + 300));
  await refused(key, /expired at/);
});

test('an expiry can be given as a time', async () => {
  const at = new Date(Date.now() + 3_600_000).toISOString();
  const created = await generate({ expires: at });
  assert.equal(created.expires, at);
});

test('/key/info: the master key reads any key, a key only itself', async () => {
  const a = await generate({ key_alias: 'info-a', max_budget: 12.5, rpm_limit: 7 });
  const b = await generate({ key_alias: 'info-b' });
  const asMaster = await adminGet(`/key/info?key=${a.key}`);
  assert.equal(asMaster.status, 200);
  assert.equal(asMaster.json.key, a.token);
  assert.equal(asMaster.json.info.key_alias, 'info-a');
  assert.equal(asMaster.json.info.max_budget, 12.5);
  assert.equal(asMaster.json.info.rpm_limit, 7);
  assert.equal(asMaster.json.info.spend, 0);
  assert.equal(asMaster.text.includes(a.key), false, 'the secret is not echoed');
  assert.equal((await adminGet(`/key/info?key=${a.token}`)).json.info.key_alias, 'info-a');

  const self = await raw(gw, '/key/info', { method: 'GET', key: a.key });
  assert.equal(self.status, 200);
  assert.equal(self.json.info.token, a.token);
  const selfByHash = await raw(gw, `/key/info?key=${a.token}`, { method: 'GET', key: a.key });
  assert.equal(selfByHash.status, 200);

  const other = await raw(gw, `/key/info?key=${b.token}`, { method: 'GET', key: a.key });
  assert.equal(other.status, 403);
  assert.equal(other.json.error.type, 'permission_error');
  assert.equal(other.text.includes('info-b'), false);
  assert.equal((await adminGet('/key/info?key=sk-missing-1234')).status, 404);
});

test('only the master key manages keys', async () => {
  const { key } = await generate();
  for (const [path, method] of [
    ['/key/generate', 'POST'],
    ['/key/update', 'POST'],
    ['/key/delete', 'POST'],
    ['/key/list', 'GET'],
    ['/key/regenerate', 'POST'],
    ['/key/block', 'POST'],
    ['/key/unblock', 'POST'],
  ]) {
    const res = await raw(gw, path, { method, key, body: method === 'POST' ? { key } : undefined });
    assert.equal(res.status, 403, `${path}: ${res.text}`);
  }
  assert.equal((await raw(gw, '/key/generate', { key: null, body: {} })).status, 401);
});

test('every key field is validated, naming the field', async () => {
  const cases = [
    [{ key_alias: 42 }, 'key_alias'],
    [{ key: 'not-a-key-1234' }, 'key'],
    [{ key: MASTER_KEY }, 'key'],
    [{ duration: '10 minutes' }, 'duration'],
    [{ duration: '0s' }, 'duration'],
    [{ expires: 'tomorrow' }, 'expires'],
    [{ models: ['gpt-4'] }, 'models'],
    [{ models: 'databricks-gpt-5-1' }, 'models'],
    [{ aliases: { fast: 'gpt-4' } }, 'aliases'],
    [{ max_budget: -1 }, 'max_budget'],
    [{ soft_budget: 'cheap' }, 'soft_budget'],
    [{ budget_duration: '1 month' }, 'budget_duration'],
    [{ rpm_limit: -5 }, 'rpm_limit'],
    [{ tpm_limit: 2.5 }, 'tpm_limit'],
    [{ max_parallel_requests: '3' }, 'max_parallel_requests'],
    [{ model_rpm_limit: { 'databricks-gpt-5-1': 'ten' } }, 'model_rpm_limit'],
    [{ model_tpm_limit: { 'gpt-4': 10 } }, 'model_tpm_limit'],
    [{ metadata: 'x' }, 'metadata'],
    [{ tags: 'a,b' }, 'tags'],
    [{ blocked: 'no' }, 'blocked'],
    [{ user_id: 7 }, 'user_id'],
    [{ team_id: ['t'] }, 'team_id'],
    [{ not_a_field: true }, 'not_a_field'],
  ];
  for (const [body, param] of cases) {
    const res = await admin('/key/generate', body);
    assert.equal(res.status, 400, `${JSON.stringify(body)}: ${res.text}`);
    assert.equal(res.json.error.type, 'invalid_request_error');
    assert.equal(res.json.error.param, param, JSON.stringify(body));
  }
  assert.equal((await admin('/key/generate', '[]')).status, 400);
  assert.equal((await admin('/key/update', { rpm_limit: 5 })).json.error.param, 'key');
  assert.equal((await admin('/key/update', { key: 'sk-missing-9999', rpm_limit: 5 })).status, 404);
});

test('caller-chosen keys and aliases are unique, never overwritten', async () => {
  const chosen = 'sk-chosen-by-caller-123';
  const first = await generate({ key: chosen, key_alias: 'unique-alias' });
  assert.equal(first.key, chosen);
  const again = await admin('/key/generate', { key: chosen });
  assert.equal(again.status, 400);
  assert.equal(again.json.error.param, 'key');
  const sameAlias = await admin('/key/generate', { key_alias: 'unique-alias' });
  assert.equal(sameAlias.status, 400);
  assert.equal(sameAlias.json.error.param, 'key_alias');
  const other = await generate();
  const taken = await admin('/key/update', { key: other.key, key_alias: 'unique-alias' });
  assert.equal(taken.status, 400);
  // The first key is untouched.
  await chatAs(chosen);
});

test('aliases map a requested name to a configured model, and /v1/models shows what a key may use', async () => {
  const { key } = await generate({
    models: ['fast', 'databricks-claude-sonnet-4-5'],
    aliases: { fast: 'databricks-gpt-5-1' },
  });
  gw.fake.reset();
  const answer = await chatAs(key, 'fast');
  assert.equal(answer.model, 'fast');
  assert.equal(gw.fake.requests[0].body.model, 'databricks-gpt-5-1');
  const models = [];
  for await (const m of gw.client({ apiKey: key }).models.list()) models.push(m.id);
  assert.deepEqual(models.sort(), ['databricks-claude-sonnet-4-5', 'fast']);
  await refused(key, /not allowed/, 'databricks-gpt-oss-120b');
  assert.equal((await raw(gw, '/v1/models/databricks-gpt-oss-120b', { method: 'GET', key })).status, 404);
});

test('a virtual key works in every accepted header and with streaming', async () => {
  const { key } = await generate();
  for (const headers of [{ authorization: `Bearer ${key}` }, { 'x-litellm-api-key': key }, { 'api-key': key }, { 'x-api-key': key }]) {
    const res = await raw(gw, '/chat/completions', { key: null, headers, body: { model: 'databricks-gpt-5-1', messages: userMessage('x') } });
    assert.equal(res.status, 200, res.text);
  }
  const stream = await gw.client({ apiKey: key }).chat.completions.create({
    model: 'databricks-gpt-5-1',
    stream: true,
    messages: userMessage('stream with a key'),
  });
  let text = '';
  for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? '';
  assert.equal(text, 'Echo: stream with a key');
});

test('/key/list pages through hashes, filters, and never shows a secret', async () => {
  const mine = [];
  for (let i = 0; i < 3; i++) mine.push(await generate({ user_id: 'list-user', key_alias: `list-${i}` }));
  const filtered = await adminGet('/key/list?user_id=list-user&size=2');
  assert.equal(filtered.status, 200, filtered.text);
  assert.equal(filtered.json.total_count, 3);
  assert.equal(filtered.json.total_pages, 2);
  assert.equal(filtered.json.keys.length, 2);
  const page2 = await adminGet('/key/list?user_id=list-user&size=2&page=2');
  const tokens = [...filtered.json.keys, ...page2.json.keys].map((k) => k.token).sort();
  assert.deepEqual(tokens, mine.map((k) => k.token).sort());
  // newest first
  assert.equal(filtered.json.keys[0].key_alias, 'list-2');
  const byAlias = await adminGet('/key/list?key_alias=list-1&return_full_object=true');
  assert.equal(byAlias.json.keys.length, 1);
  assert.equal(byAlias.json.keys[0].token, mine[1].token);
  assert.equal(byAlias.json.keys[0].user_id, 'list-user');
  const all = await adminGet('/key/list?size=100');
  for (const k of mine) assert.equal(all.text.includes(k.key), false);
  assert.equal((await adminGet('/key/list?size=1000')).status, 400);
});

test('/key/delete takes aliases, and deletes nothing when a key is missing', async () => {
  const a = await generate({ key_alias: 'delete-me' });
  const b = await generate();
  const partial = await admin('/key/delete', { keys: [b.key, 'sk-does-not-exist-1'] });
  assert.equal(partial.status, 404);
  assert.match(partial.json.error.message, /sk-\.\.\.st-1/);
  assert.equal(partial.text.includes('sk-does-not-exist-1'), false);
  await chatAs(b.key);
  const res = await admin('/key/delete', { key_aliases: ['delete-me'] });
  assert.deepEqual(res.json.deleted_keys, [a.token]);
  await refused(a.key, /deleted/);
  assert.equal((await admin('/key/delete', {})).status, 400);
});

test('/key/{key}/regenerate with a chosen new key', async () => {
  const { key, token } = await generate({ key_alias: 'regen-path', tpm_limit: 100000 });
  const res = await admin(`/key/${token}/regenerate`, { new_key: 'sk-my-new-secret-77' });
  assert.equal(res.status, 200, res.text);
  assert.equal(res.json.key, 'sk-my-new-secret-77');
  assert.equal(res.json.tpm_limit, 100000);
  await chatAs('sk-my-new-secret-77');
  await refused(key, /regenerated/);
  assert.equal((await adminGet('/key/list?key_alias=regen-path')).json.keys[0].token, sha256('sk-my-new-secret-77'));
});

test('KV holds hashes only: no clear key anywhere', async () => {
  const secrets = [(await generate({ key: 'sk-plain-text-check-1' })).key, (await generate()).key];
  const kv = await gw.keysKv();
  let cursor;
  const names = [];
  do {
    const page = await kv.list({ cursor });
    names.push(...page.keys.map((k) => k.name));
    cursor = page.list_complete ? undefined : page.cursor;
  } while (cursor);
  assert.ok(names.includes(`key:${sha256(secrets[0])}`));
  for (const name of names) {
    const value = (await kv.get(name)) ?? '';
    for (const secret of [...secrets, MASTER_KEY]) {
      assert.equal(name.includes(secret), false, `KV key ${name}`);
      assert.equal(value.includes(secret), false, `KV value of ${name}`);
    }
  }
});

test('log lines carry the key hash prefix and alias, never the key', async () => {
  const { key, token } = await generate({ key_alias: 'logged-alias' });
  const res = await raw(gw, '/v1/chat/completions', { key, body: { model: 'databricks-gpt-5-1', messages: userMessage('x') } });
  const line = gw.requestLogs().find((l) => l.call_id === res.headers.get('x-litellm-call-id'));
  assert.equal(line.key_hash, token.slice(0, 16));
  assert.equal(line.key_alias, 'logged-alias');
  assert.equal(gw.logs.join('\n').includes(key), false);
});
