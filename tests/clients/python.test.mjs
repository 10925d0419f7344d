// The Python clients of the matrix (test_python_clients.py: the OpenAI SDK and its helpers,
// LangChain, the LiteLLM SDK), run by pytest from the venv `make test-clients` installs, against
// the built worker under workerd in front of the fake Databricks.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startGateway, MASTER_KEY } from '../support/gateway.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const PYTHON = path.join(ROOT, 'build-clients', 'venv', 'bin', 'python');

let gw;
let control;
before(async () => {
  gw = await startGateway();
  control = await startControl(gw.fake);
});
after(async () => {
  await new Promise((resolve) => control?.close(resolve));
  await gw?.close();
});

/** What the Python tests may ask about the fake: the last usage it reported, its request count. */
async function startControl(fake) {
  const server = http.createServer((req, res) => {
    let body;
    if (req.method === 'POST' && req.url === '/reset') body = fake.reset() ?? null;
    else if (req.url === '/last-usage') body = fake.requests.findLast((r) => r.usage)?.usage ?? null;
    else if (req.url === '/requests') body = fake.requests.length;
    res.writeHead(body === undefined ? 404 : 200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body ?? null));
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  server.url = `http://127.0.0.1:${server.address().port}`;
  return server;
}

test('the Python clients work unchanged (pytest)', async () => {
  const env = {
    ...process.env,
    GATEWAY_URL: gw.url,
    GATEWAY_KEY: MASTER_KEY,
    CONTROL_URL: control.url,
    // tiktoken (LangChain's embeddings) reads cl100k_base from here instead of downloading it.
    TIKTOKEN_CACHE_DIR: path.join(ROOT, 'build-clients', 'tiktoken'),
    // LiteLLM: no price map download, no telemetry.
    LITELLM_LOCAL_MODEL_COST_MAP: 'True',
    LITELLM_TELEMETRY: 'False',
    PYTHONDONTWRITEBYTECODE: '1',
  };
  const args = ['-m', 'pytest', '-q', '-p', 'no:cacheprovider', '-p', 'no:warnings', path.join(ROOT, 'tests', 'clients', 'test_python_clients.py')];
  // A hung client must fail the run, not stall CI.
  const child = spawn(PYTHON, args, { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'], timeout: 300_000 });
  let output = '';
  child.stdout.on('data', (d) => (output += d));
  child.stderr.on('data', (d) => (output += d));
  const code = await new Promise((resolve) => child.on('close', resolve));
  process.stdout.write(output.split('\n').map((l) => `# ${l}`).join('\n') + '\n');
  assert.equal(code, 0, output);
});
