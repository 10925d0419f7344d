// `make dev`: the gateway under `wrangler dev` on :4000 (PORT overrides), like
// `litellm --config litellm_config.yaml`. Without DATABRICKS_API_BASE it starts the bundled
// fake Databricks on loopback and points the gateway at it.
//
// Values the config names (os.environ/NAME, $NAME) are handed to wrangler through a temporary
// env file readable only by this user, so secrets never appear in a process list.

import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startFakeDatabricks } from './fake-databricks.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const PORT = process.env.PORT || '4000';
const CONFIG = path.resolve(ROOT, process.env.GATEWAY_CONFIG || 'config/litellm_config.yaml');
const DEFAULT_MASTER_KEY = 'sk-1234';
const FAKE_TOKEN = 'dapi-fake-dev-token';

/** The env names the config refers to, in either reference form. */
function referencedNames(configText) {
  const names = new Set(['DATABRICKS_API_BASE', 'DATABRICKS_TOKEN', 'LITELLM_MASTER_KEY']);
  for (const m of configText.matchAll(/(?:os\.environ\/|\$\{?)([A-Za-z_][A-Za-z0-9_]*)/g)) names.add(m[1]);
  return names;
}

function envLine(name, value) {
  return /^[\w.:/+=@-]*$/.test(value) ? `${name}=${value}` : `${name}=${JSON.stringify(value)}`;
}

const vars = {};
for (const name of referencedNames(readFileSync(CONFIG, 'utf8'))) {
  if (process.env[name]) vars[name] = process.env[name];
}

let fake;
if (!vars.DATABRICKS_API_BASE) {
  fake = await startFakeDatabricks({ record: false, token: vars.DATABRICKS_TOKEN || FAKE_TOKEN });
  vars.DATABRICKS_API_BASE = fake.url;
  vars.DATABRICKS_TOKEN ||= FAKE_TOKEN;
  console.log(`DATABRICKS_API_BASE is not set: serving from the bundled fake Databricks at ${fake.url}`);
} else if (!vars.DATABRICKS_TOKEN) {
  console.error('DATABRICKS_API_BASE is set but DATABRICKS_TOKEN is not: export DATABRICKS_TOKEN="dapi..."');
  process.exit(1);
} else {
  console.log(`Forwarding to ${vars.DATABRICKS_API_BASE}`);
}
if (!vars.LITELLM_MASTER_KEY) {
  vars.LITELLM_MASTER_KEY = DEFAULT_MASTER_KEY;
  console.log(`LITELLM_MASTER_KEY is not set: the master key is ${DEFAULT_MASTER_KEY} (local use only)`);
}

const dir = mkdtempSync(path.join(tmpdir(), 'databricks-gateway-'));
const envFile = path.join(dir, 'dev.env');
writeFileSync(envFile, Object.entries(vars).map(([k, v]) => envLine(k, v)).join('\n') + '\n', { mode: 0o600 });

const wrangler = spawn(
  path.join(ROOT, 'node_modules', '.bin', 'wrangler'),
  ['dev', '--port', PORT, '--ip', '0.0.0.0', '--env-file', envFile, '--show-interactive-dev-session=false'],
  { cwd: ROOT, stdio: 'inherit', env: { ...process.env, WRANGLER_SEND_METRICS: 'false' } },
);
console.log(`Gateway on http://0.0.0.0:${PORT}, its admin page at http://localhost:${PORT}/ui/ (Ctrl-C stops it)`);

let stopping = false;
async function stop(code) {
  if (stopping) return;
  stopping = true;
  wrangler.kill('SIGTERM');
  rmSync(dir, { recursive: true, force: true });
  await fake?.close();
  process.exit(code);
}
process.on('SIGINT', () => stop(0));
process.on('SIGTERM', () => stop(0));
wrangler.on('exit', (code) => stop(code ?? 0));
