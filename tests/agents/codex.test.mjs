// Codex CLI (`@openai/codex`, pinned in tests/agents/package.json) run non-interactively,
// `codex exec "..."`, against the built worker under workerd in front of the fake Databricks,
// configured as a user would: a model provider in $CODEX_HOME/config.toml with the gateway's
// /v1 as base_url, a virtual key in the variable env_key names, and wire_api = "responses".
// Codex's native binary ships inside the npm package and needs no network but the gateway's:
// its update check, plugin sync and analytics are switched off in the config (with them on it
// only looks up hosts in the background, which fails offline without harm).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, mkdir, writeFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startGateway, raw, eventually } from '../support/gateway.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const CODEX = path.join(HERE, 'node_modules', '.bin', 'codex');

let gw;
let dir;
let key;
before(async () => {
  gw = await startGateway();
  dir = await mkdtemp(path.join(os.tmpdir(), 'codex-'));
  await mkdir(path.join(dir, 'home'));
  await mkdir(path.join(dir, 'work'));
  await writeFile(path.join(dir, 'home', 'config.toml'), codexConfig(`${gw.url}/v1`, 'databricks-gpt-5-1'));
  const made = await raw(gw, '/key/generate', {
    body: { key_alias: 'codex', models: ['databricks-gpt-5-1', 'databricks-claude-sonnet-4-5'], max_budget: 1 },
  });
  assert.equal(made.status, 200, made.text);
  key = made.json;
});
after(async () => {
  await gw?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** The config.toml the README shows, pointed at `baseUrl`. */
function codexConfig(baseUrl, model) {
  return `model = "${model}"
model_provider = "databricks-gateway"
check_for_update_on_startup = false

[model_providers.databricks-gateway]
name = "Databricks gateway"
base_url = "${baseUrl}"
env_key = "DATABRICKS_GATEWAY_KEY"
wire_api = "responses"

[features]
plugins = false

[analytics]
enabled = false
`;
}

/** Runs `codex exec` with `args`; resolves with its exit code, stdout and stderr. */
function codexExec(args) {
  const env = { ...process.env, CODEX_HOME: path.join(dir, 'home'), DATABRICKS_GATEWAY_KEY: key.key };
  for (const name of ['OPENAI_API_KEY', 'OPENAI_BASE_URL']) delete env[name];
  return new Promise((resolve) => {
    const child = execFile(
      CODEX,
      ['exec', '--skip-git-repo-check', ...args],
      { cwd: path.join(dir, 'work'), env, timeout: 120_000 },
      (error, stdout, stderr) => resolve({ code: error ? (error.code ?? 1) : 0, stdout, stderr }),
    );
    child.stdin.end();
  });
}

test('codex exec "say hello" prints the answer of the fake, served natively on GPT', async () => {
  gw.fake.reset();
  const run = await codexExec(['say hello']);
  assert.equal(run.code, 0, run.stderr);
  assert.equal(run.stdout.trim(), 'Echo: say hello');
  // One streamed Responses call, forwarded to Databricks' /responses with Codex's body.
  const sent = gw.fake.requests.filter((r) => r.path === '/serving-endpoints/responses');
  assert.equal(sent.length, 1, JSON.stringify(gw.fake.requests.map((r) => r.path)));
  assert.equal(sent[0].body.stream, true);
  assert.equal(sent[0].body.model, 'databricks-gpt-5-1');
  assert.ok(sent[0].body.tools.length > 0);
  // Charged to the virtual key.
  const rows = (await raw(gw, `/spend/logs?api_key=${key.token}`, { method: 'GET' })).json;
  assert.ok(rows.some((r) => r.model_group === 'databricks-gpt-5-1' && r.stream && r.spend > 0), JSON.stringify(rows));
});

test('codex exec on a Claude model: translated to chat completions, hosted tools left out', async () => {
  gw.fake.reset();
  const run = await codexExec(['-m', 'databricks-claude-sonnet-4-5', 'say hello']);
  assert.equal(run.code, 0, run.stderr);
  assert.equal(run.stdout.trim(), 'Echo: say hello');
  const [sent] = gw.fake.requests;
  assert.equal(sent.path, '/serving-endpoints/chat/completions');
  assert.equal(sent.body.model, 'databricks-claude-sonnet-4-5');
  assert.equal(sent.body.messages.at(-1).role, 'user');
  let line;
  await eventually(() => (line = gw.requestLogs().findLast((l) => l.route === '/v1/responses')), 3000, 'the log line');
  assert.ok(line.left_out.some((w) => /web_search/.test(w)), JSON.stringify(line));
});

test('codex exec runs a tool the model calls and sends its output back in the next turn', async () => {
  gw.fake.reset();
  // The fake calls Codex's first tool (exec_command) with arguments made from its schema,
  // which Codex refuses to run; the refusal goes back as the call's output, which the fake
  // echoes as its final answer.
  const run = await codexExec(['run a command [fake:tool]']);
  assert.equal(run.code, 0, run.stderr);
  assert.match(run.stdout.trim(), /^Tool output: /);
  const turns = gw.fake.requests.filter((r) => r.path === '/serving-endpoints/responses');
  assert.equal(turns.length, 2);
  const last = turns[1].body.input.at(-1);
  assert.equal(last.type, 'function_call_output');
  const call = turns[1].body.input.find((i) => i.type === 'function_call');
  assert.equal(call.call_id, last.call_id);
});
