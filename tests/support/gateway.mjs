// Starts the built worker under workerd (Miniflare) in front of the fake Databricks, as the
// end-to-end tests and the benchmark use it. Nothing about the runtime is faked: the worker is
// the wasm `make build-test` produced, and its outbound fetches cross real loopback sockets.

import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Miniflare } from 'miniflare';
import OpenAI from 'openai';
import { startFakeDatabricks } from '../fake-databricks.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const MASTER_KEY = 'sk-test-master-4f1c9a';
export const DATABRICKS_TOKEN = 'dapi0123456789abcdef0123456789abcdef';
export const WRONG_TOKEN = 'dapiffffffffffffffffffffffffffffffff';
// The compatibility date of wrangler.toml.
export const COMPATIBILITY_DATE = '2026-04-20';

/**
 * As wrangler.toml's [assets] (run_worker_first): the worker answers every route but the admin
 * page's (/ui, /ui/*), which the assets serve; the table is only read by the worker. Miniflare
 * puts its asset-router worker in front of any worker with assets (so does Cloudflare).
 */
export const ASSETS = {
  directory: path.join(ROOT, 'build-assets'),
  binding: 'ASSETS',
  routerConfig: { has_user_worker: true, static_routing: { user_worker: ['/*'], asset_worker: ['/ui', '/ui/*'] } },
};

/**
 * The worker var that picks one of the configs `make build-test` embeds besides
 * tests/fixtures/litellm_config.yaml (feature test-configs): `{ config: 'router' }` runs
 * tests/fixtures/router.yaml.
 */
export const testConfigVar = (config) => (config ? { GATEWAY_TEST_CONFIG: config } : {});

/**
 * @param {{ bindings?: Record<string,string>, fake?: object, config?: string, scriptDir?: string, persistDir?: string, worker?: object, extraWorkers?: object[] }} options
 *   `bindings` are added to (or, when undefined, removed from) the worker's vars; `config` names
 *   another test config by its file stem (see testConfigVar). `worker` adds Miniflare options to
 *   the gateway's worker (an `analyticsEngineDatasets` binding, say); `extraWorkers` run beside
 *   it (what a `wrappedBindings` entry names).
 */
export async function startGateway({ bindings = {}, fake: fakeOptions = {}, config, scriptDir = 'build-test', persistDir, worker = {}, extraWorkers = [] } = {}) {
  const fake = await startFakeDatabricks({ token: DATABRICKS_TOKEN, ...fakeOptions });
  const logs = [];
  const vars = {
    DATABRICKS_API_BASE: fake.url,
    DATABRICKS_TOKEN,
    WRONG_DATABRICKS_TOKEN: WRONG_TOKEN,
    LITELLM_MASTER_KEY: MASTER_KEY,
    ...testConfigVar(config),
    ...bindings,
  };
  for (const [name, value] of Object.entries(vars)) if (value === undefined) delete vars[name];
  const gatewayWorker = {
    scriptPath: path.join(ROOT, scriptDir, 'index.js'),
    modules: true,
    modulesRules: [{ type: 'CompiledWasm', include: ['**/*.wasm'], fallthrough: true }],
    compatibilityDate: COMPATIBILITY_DATE,
    bindings: vars,
    kvNamespaces: ['KEYS'],
    assets: ASSETS,
    durableObjects: {
      LEDGER: { className: 'Ledger', useSQLite: true },
      HEALTH: { className: 'GroupHealth', useSQLite: true },
      KEY_ALIASES: { className: 'KeyAlias', useSQLite: true },
      REPORTS: { className: 'Reports', useSQLite: true },
    },
    ...worker,
  };
  const mf = new Miniflare({
    ...(extraWorkers.length ? { workers: [{ name: 'gateway', ...gatewayWorker }, ...extraWorkers] } : gatewayWorker),
    // With a directory, KV and Durable Object storage outlive this instance (a restart).
    ...(persistDir ? { kvPersist: path.join(persistDir, 'kv'), durableObjectsPersist: path.join(persistDir, 'do') } : {}),
    host: '127.0.0.1',
    port: 0,
    structuredWorkerdLogs: true,
    handleStructuredLogs: ({ message }) => {
      logs.push(message);
    },
  });
  const url = (await mf.ready).toString().replace(/\/$/, '');
  return {
    url,
    fake,
    mf,
    /** The worker's console output, one entry per line. */
    logs,
    /** The request log lines (JSON) the worker wrote. */
    requestLogs: () =>
      logs.flatMap((line) => {
        try {
          const v = JSON.parse(line);
          return v && typeof v === 'object' && 'call_id' in v ? [v] : [];
        } catch {
          return [];
        }
      }),
    /** The KV namespace holding the keys, to inspect what is stored. */
    keysKv: () => mf.getKVNamespace('KEYS'),
    client: (options = {}) => new OpenAI({ baseURL: `${url}/v1`, apiKey: MASTER_KEY, maxRetries: 0, ...options }),
    async close() {
      await mf.dispose();
      await fake.close();
    },
  };
}

/** Sends a raw request to the gateway (what curl would send). */
export async function raw(gateway, pathname, options = {}) {
  return rawWith(fetch, `${gateway.url}${pathname}`, options);
}

/** `raw` through any fetch function (a Miniflare worker's own, to pick an isolate). */
export async function rawWith(fetchFn, url, { method = 'POST', headers = {}, body, key = MASTER_KEY } = {}) {
  const h = { ...headers };
  if (key) h.authorization = `Bearer ${key}`;
  if (body !== undefined && typeof body !== 'string' && !(body instanceof Uint8Array)) {
    h['content-type'] = 'application/json';
    body = JSON.stringify(body);
  }
  const res = await fetchFn(url, { method, headers: h, body });
  const text = await res.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, headers: res.headers, text, json };
}

export const userMessage = (content) => [{ role: 'user', content }];

/** The function tool the tests offer; the fake answers it with `{"city":"Paris"}`. */
export const WEATHER_TOOL = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'The weather in a city',
    parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
  },
};

/** Streams a chat answer with plain fetch (what curl sees): the response and its `data:` payloads. */
export async function rawStream(gateway, model, content, key = MASTER_KEY) {
  const res = await fetch(`${gateway.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model, stream: true, messages: userMessage(content) }),
  });
  const text = await res.text();
  const events = text
    .split('\n\n')
    .filter((e) => e.trim())
    .map((e) => e.replace(/^data: /, ''));
  return { res, text, events };
}

/** Waits until `predicate()` holds, polling; fails after `ms`. */
export async function eventually(predicate, ms = 3000, what = 'condition') {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await predicate()) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`timed out waiting for ${what}`);
}
