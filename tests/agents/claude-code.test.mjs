// Claude Code (pinned in tests/agents/package.json, installed by `make test-agents`) run
// non-interactively against the built gateway under workerd, in front of the fake Databricks:
// `claude -p "say hello"` prints the fake's answer, through a virtual key, on a Claude model
// (native) and on GPT (translated). Offline: nothing leaves the machine.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startGateway, raw, eventually } from '../support/gateway.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const CLAUDE = path.join(HERE, 'node_modules', '.bin', 'claude');
const skip = existsSync(CLAUDE) ? false : `Claude Code is not installed: run \`make test-agents\``;

let gw;
let home;
before(async () => {
  if (skip) return;
  gw = await startGateway();
  home = mkdtempSync(path.join(tmpdir(), 'claude-home-'));
});
after(async () => {
  await gw?.close();
  if (home) rmSync(home, { recursive: true, force: true });
});

/** Runs `claude -p prompt` with only the environment given (and PATH); resolves {code, stdout, stderr}. */
function claude(prompt, env) {
  return new Promise((resolve, reject) => {
    const child = spawn(CLAUDE, ['-p', prompt], {
      cwd: home,
      env: {
        PATH: process.env.PATH,
        HOME: home,
        ANTHROPIC_BASE_URL: gw.url,
        DISABLE_TELEMETRY: '1',
        CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: '1',
        ...env,
      },
      // No stdin: `claude -p` would wait for piped input.
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: 120_000,
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

async function generate(fields) {
  const res = await raw(gw, '/key/generate', { body: fields });
  assert.equal(res.status, 200, res.text);
  return res.json;
}
const spendLogs = async (token) => (await raw(gw, `/spend/logs?api_key=${token}`, { method: 'GET' })).json;

/** The fake echoes the last user text: Claude Code's reminders, then the prompt. */
function assertFakesAnswer({ code, stdout, stderr }, prompt) {
  assert.equal(code, 0, `claude exited ${code}: ${stderr}`);
  const answer = stdout.trim();
  assert.ok(answer.startsWith('Echo: ') && answer.endsWith(prompt), `unexpected answer: ${stdout.slice(0, 300)}…`);
}

test('claude -p "say hello" on a Claude model: native, with a virtual key, its prompt cache priced', { skip }, async () => {
  const model = 'databricks-claude-sonnet-4-5';
  const { key, token } = await generate({ models: [model], max_budget: 5 });
  const run = await claude('say hello', { ANTHROPIC_API_KEY: key, ANTHROPIC_MODEL: model });
  assertFakesAnswer(run, 'say hello');

  // One Messages call, passed natively with Claude Code's betas; no other model was asked for.
  const sent = gw.fake.requests.filter((r) => r.path === '/serving-endpoints/anthropic/v1/messages');
  assert.equal(sent.length, gw.fake.requests.length, 'every call went to the native route');
  assert.ok(sent.length >= 1);
  assert.ok(sent.every((r) => r.body.model === model));
  assert.match(sent[0].headers['anthropic-beta'], /claude-code-/);
  assert.equal(sent[0].body.stream, true);

  // A second run reads the system prompt Claude Code marked for caching.
  gw.fake.requests.length = 0;
  assertFakesAnswer(await claude('say hello again', { ANTHROPIC_API_KEY: key, ANTHROPIC_MODEL: model }), 'say hello again');
  await eventually(async () => (await spendLogs(token)).length >= 2, 4000, 'two spend rows');
  const rows = (await spendLogs(token)).sort((a, b) => a.startTime.localeCompare(b.startTime));
  assert.ok(rows[0].cache_creation_input_tokens > 0, JSON.stringify(rows[0]));
  assert.ok(rows.at(-1).cache_read_input_tokens > 0, JSON.stringify(rows.at(-1)));
  assert.ok(rows.every((r) => r.status === 'success' && r.stream === true && r.spend > 0));
});

test('claude -p on a GPT model, with the key as a Bearer token: translated to chat and back', { skip }, async () => {
  const model = 'databricks-gpt-5-1';
  const { key } = await generate({ models: [model] });
  gw.fake.reset();
  const run = await claude('say hello', { ANTHROPIC_AUTH_TOKEN: key, ANTHROPIC_MODEL: model });
  assertFakesAnswer(run, 'say hello');
  assert.ok(gw.fake.requests.length >= 1);
  for (const r of gw.fake.requests) {
    assert.equal(r.path, '/serving-endpoints/chat/completions');
    assert.equal(r.body.model, model);
  }
});

test("Claude Code's own model id (claude-haiku-4-5), mapped to an endpoint by the config's model_name", { skip }, async () => {
  gw.fake.reset();
  const run = await claude('say hello', { ANTHROPIC_API_KEY: (await generate({})).key, ANTHROPIC_MODEL: 'claude-haiku-4-5' });
  assertFakesAnswer(run, 'say hello');
  assert.ok(gw.fake.requests.length >= 1);
  for (const r of gw.fake.requests) {
    assert.equal(r.path, '/serving-endpoints/anthropic/v1/messages');
    assert.equal(r.body.model, 'databricks-claude-haiku-4-5');
  }
});
