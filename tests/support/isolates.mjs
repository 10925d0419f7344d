// Two copies of the built worker in one Miniflare, each in its own isolate (its own wasm
// instance and in-memory caches), sharing one KV namespace and the Durable Objects: what two
// Cloudflare locations serving the same deployment share. Tests use it for what the README
// promises across isolates (a key narrowed or revoked through one is refused by the other
// while its KV cache is still stale).

import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Miniflare } from 'miniflare';
import { startFakeDatabricks } from '../fake-databricks.mjs';
import { MASTER_KEY, DATABRICKS_TOKEN, WRONG_TOKEN, COMPATIBILITY_DATE, rawWith, testConfigVar } from './gateway.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
// Durable Object classes the worker exports, and the bindings that name them.
const OBJECTS = { LEDGER: 'Ledger', HEALTH: 'GroupHealth', KEY_ALIASES: 'KeyAlias', REPORTS: 'Reports' };

/** `config` names another test config, as for startGateway. */
export async function startTwoIsolates({ config, scriptDir = 'build-test', fake: fakeOptions = {} } = {}) {
  const fake = await startFakeDatabricks({ token: DATABRICKS_TOKEN, ...fakeOptions });
  const bindings = {
    DATABRICKS_API_BASE: fake.url,
    DATABRICKS_TOKEN,
    WRONG_DATABRICKS_TOKEN: WRONG_TOKEN,
    LITELLM_MASTER_KEY: MASTER_KEY,
    ...testConfigVar(config),
  };
  const worker = (name, objects) => ({
    name,
    scriptPath: path.join(ROOT, scriptDir, 'index.js'),
    modules: true,
    modulesRules: [{ type: 'CompiledWasm', include: ['**/*.wasm'], fallthrough: true }],
    compatibilityDate: COMPATIBILITY_DATE,
    bindings,
    kvNamespaces: { KEYS: 'shared-keys' },
    durableObjects: objects,
  });
  const own = Object.fromEntries(Object.entries(OBJECTS).map(([b, className]) => [b, { className, useSQLite: true }]));
  const borrowed = Object.fromEntries(Object.entries(OBJECTS).map(([b, className]) => [b, { className, scriptName: 'a' }]));
  const mf = new Miniflare({ workers: [worker('a', own), worker('b', borrowed)], host: '127.0.0.1', port: 0 });
  await mf.ready;
  const isolates = { a: await mf.getWorker('a'), b: await mf.getWorker('b') };

  /** Sends a request through isolate `which` ('a' or 'b'), as `raw` does. */
  const send = (which, pathname, options) =>
    rawWith((url, init) => isolates[which].fetch(url, init), `http://gateway${pathname}`, options);

  return {
    fake,
    send,
    async close() {
      await mf.dispose();
      await fake.close();
    },
  };
}
