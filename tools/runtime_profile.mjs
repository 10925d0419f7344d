#!/usr/bin/env node
// `make profile-runtime`: where workerd's CPU goes per request on each of the gateway's paths.
// For each path (master key, a key without limits, a limited key, a stream) it sends the same
// number of requests at a few connections and reads the workerd process's CPU time (all its
// threads, in nanoseconds from /proc/<pid>/task/*/schedstat) until workerd is idle again, so a
// path pays for the background work it leaves (settlements). With PROFILE_CPU=1 it also takes a
// V8 CPU profile of the worker's isolate over each path (Miniflare's inspector) and prints the
// functions with the most self time; build with names (WASM_NAMES=1) to read wasm frames.
//
// Environment: PROFILE_DIRS (comma-separated builds, each under its own workerd, their passes
// alternating so that a busy moment of the machine falls on all of them; default build-test),
// PROFILE_REQUESTS (per pass, default 1500), PROFILE_CONNECTIONS (default 4), PROFILE_PATHS
// (default master,vkey,limited,stream), PROFILE_REPEAT (passes per path and build, the median is
// printed; default 3), PROFILE_CPU=1 (and PROFILE_TOP, rows shown, default 30).

import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Miniflare } from 'miniflare';
import { Client } from 'undici';
import WebSocket from 'ws';
import { startFakeDatabricks } from '../tests/fake-databricks.mjs';
import { MASTER_KEY, DATABRICKS_TOKEN, COMPATIBILITY_DATE } from '../tests/support/gateway.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const DIRS = (process.env.PROFILE_DIRS || 'build-test').split(',').map((d) => path.resolve(ROOT, d));
const REQUESTS = Number(process.env.PROFILE_REQUESTS || 1500);
const CONNECTIONS = Number(process.env.PROFILE_CONNECTIONS || 4);
const REPEAT = Number(process.env.PROFILE_REPEAT || 3);
const CPU_PROFILE = process.env.PROFILE_CPU === '1';
const INSPECTOR_PORT = 9400 + 2 * (process.pid % 250);
const MODEL = 'databricks-gpt-5-1';
const CHAT = { model: MODEL, messages: [{ role: 'user', content: 'Hello, benchmark' }], max_tokens: 16 };
const STREAM = { ...CHAT, messages: [{ role: 'user', content: 'Hello [fake:chunks=5]' }], stream: true };
const LIMITED = { rpm_limit: 100_000_000, tpm_limit: 1_000_000_000_000, max_parallel_requests: 10_000, max_budget: 1_000_000 };

const fake = await startFakeDatabricks({ token: DATABRICKS_TOKEN });
const builds = [];
for (const [i, dir] of DIRS.entries()) builds.push(await startBuild(dir, i));

/** One build under its own workerd, with a key without limits and a limited key. */
async function startBuild(dir, index) {
  const storage = fs.mkdtempSync(path.join(fs.existsSync('/dev/shm') ? '/dev/shm' : '/tmp', 'gw-profile-'));
  const before = new Set(workerdPids());
  const mf = new Miniflare({
    scriptPath: path.join(dir, 'index.js'),
    modules: true,
    modulesRules: [{ type: 'CompiledWasm', include: ['**/*.wasm'], fallthrough: true }],
    compatibilityDate: COMPATIBILITY_DATE,
    bindings: { DATABRICKS_API_BASE: fake.url, DATABRICKS_TOKEN, LITELLM_MASTER_KEY: MASTER_KEY },
    kvNamespaces: ['KEYS'],
    assets: {
      directory: path.join(ROOT, 'build-assets'),
      binding: 'ASSETS',
      routerConfig: { has_user_worker: true, invoke_user_worker_ahead_of_assets: true },
    },
    durableObjects: {
      LEDGER: { className: 'Ledger', useSQLite: true },
      HEALTH: { className: 'GroupHealth', useSQLite: true },
      KEY_ALIASES: { className: 'KeyAlias', useSQLite: true },
      // Builds from before the reports object (a baseline) do not export it.
      ...(exports(dir, 'Reports') ? { REPORTS: { className: 'Reports', useSQLite: true } } : {}),
    },
    kvPersist: path.join(storage, 'kv'),
    durableObjectsPersist: path.join(storage, 'do'),
    host: '127.0.0.1',
    port: 0,
    ...(CPU_PROFILE ? { inspectorPort: INSPECTOR_PORT + index } : {}),
    handleStructuredLogs: () => {},
    structuredWorkerdLogs: true,
  });
  const url = (await mf.ready).toString().replace(/\/$/, '');
  const pid = workerdPids().find((p) => !before.has(p));
  const key = async (fields) => {
    const res = await fetch(`${url}/key/generate`, {
      method: 'POST',
      headers: { authorization: `Bearer ${MASTER_KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify(fields),
    });
    return (await res.json()).key;
  };
  const paths = {
    master: { key: MASTER_KEY, body: CHAT },
    vkey: { key: await key({}), body: CHAT },
    limited: { key: await key(LIMITED), body: CHAT },
    stream: { key: MASTER_KEY, body: STREAM },
  };
  return { name: path.basename(dir), url, mf, pid, paths, storage, inspectorPort: INSPECTOR_PORT + index };
}

const chosen = (process.env.PROFILE_PATHS || 'master,vkey,limited,stream').split(',');

async function load(build, p, n) {
  const origin = new URL(build.url).origin;
  const dispatch = {
    path: '/v1/chat/completions',
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${p.key}` },
    body: JSON.stringify(p.body),
  };
  let left = n;
  let bad = 0;
  const clients = Array.from({ length: CONNECTIONS }, () => new Client(origin, { pipelining: 1 }));
  await Promise.all(
    clients.map(async (client) => {
      while (left-- > 0) {
        const { statusCode, body } = await client.request(dispatch);
        await body.text();
        if (statusCode !== 200) bad++;
      }
    }),
  );
  await Promise.all(clients.map((c) => c.destroy()));
  if (bad) throw new Error(`${bad} requests failed`);
}

/** Whether a build's entry module exports `name` (a Durable Object class). */
function exports(dir, name) {
  return new RegExp(`\\bas ${name}\\b`).test(fs.readFileSync(path.join(dir, 'index.js'), 'utf8'));
}

/** A workerd's CPU time, all threads, in ns. */
function cpuNs(pid) {
  let total = 0;
  for (const task of fs.readdirSync(`/proc/${pid}/task`)) {
    try {
      total += Number(fs.readFileSync(`/proc/${pid}/task/${task}/schedstat`, 'utf8').split(' ')[0]);
    } catch {
      // a thread that ended
    }
  }
  return total;
}

async function idle(pid) {
  for (;;) {
    const before = cpuNs(pid);
    await new Promise((r) => setTimeout(r, 150));
    if (cpuNs(pid) - before < 3e6) return;
  }
}

function workerdPids() {
  const pids = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const status = fs.readFileSync(`/proc/${entry}/status`, 'utf8');
      if (/^Name:\s+workerd$/m.test(status) && Number(status.match(/^PPid:\s+(\d+)/m)[1]) === process.pid) pids.push(Number(entry));
    } catch {
      // gone
    }
  }
  return pids;
}

// ------------------------------------------------------------------ the V8 CPU profile

async function inspector(port) {
  const targets = await (await fetch(`http://127.0.0.1:${port}/json`)).json();
  const target = targets.find((t) => /gateway|core:user|index/.test(t.title ?? t.id)) ?? targets[0];
  const ws = new WebSocket(target.webSocketDebuggerUrl);
  await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
  let id = 0;
  const pending = new Map();
  ws.on('message', (data) => {
    const msg = JSON.parse(data);
    if (msg.id && pending.has(msg.id)) {
      pending.get(msg.id)(msg);
      pending.delete(msg.id);
    }
  });
  const send = (method, params = {}) =>
    new Promise((resolve) => {
      pending.set(++id, resolve);
      ws.send(JSON.stringify({ id, method, params }));
    });
  await send('Profiler.enable');
  await send('Profiler.setSamplingInterval', { interval: 50 });
  return { send, close: () => ws.close(), targets: targets.map((t) => t.title) };
}

function selfTimes(profile) {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const self = new Map();
  let total = 0;
  profile.samples.forEach((sample, i) => {
    const dt = profile.timeDeltas[i] ?? 0;
    const node = byId.get(sample);
    const f = node.callFrame;
    const name = `${f.functionName || '(anonymous)'} ${f.url ? path.basename(f.url) : ''}`.trim();
    self.set(name, (self.get(name) ?? 0) + dt);
    total += dt;
  });
  return { total, rows: [...self].sort((a, b) => b[1] - a[1]) };
}

// ------------------------------------------------------------------ run

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const results = {};
for (const name of chosen) {
  for (const b of builds) {
    await load(b, b.paths[name], 300); // warm: caches, JIT tiers
    await idle(b.pid);
  }
  const passes = Object.fromEntries(builds.map((b) => [b.name, []]));
  // Builds alternate pass by pass, so that a busy moment of the machine falls on both.
  for (let i = 0; i < REPEAT; i++) {
    for (const b of i % 2 ? [...builds].reverse() : builds) {
      const before = cpuNs(b.pid);
      await load(b, b.paths[name], REQUESTS);
      await idle(b.pid);
      passes[b.name].push((cpuNs(b.pid) - before) / 1e6 / REQUESTS);
    }
  }
  for (const b of builds) {
    const cpu = median(passes[b.name]);
    (results[b.name] ??= {})[name] = cpu;
    console.log(`${name.padEnd(8)} ${b.name.padEnd(14)} workerd CPU ${cpu.toFixed(3)} ms/req  (passes ${passes[b.name].map((x) => x.toFixed(3)).join(' ')})`);
  }
  if (CPU_PROFILE) {
    for (const b of builds) {
      const insp = await inspector(b.inspectorPort);
      await insp.send('Profiler.start');
      await load(b, b.paths[name], REQUESTS);
      const { result } = await insp.send('Profiler.stop');
      insp.close();
      await idle(b.pid);
      const { total, rows } = selfTimes(result.profile);
      console.log(`  ${b.name}: isolate samples ${(total / 1000 / REQUESTS).toFixed(3)} ms/req`);
      for (const [fn, us] of rows.slice(0, Number(process.env.PROFILE_TOP || 30))) {
        console.log(`  ${((us / 1000 / REQUESTS) * 1000).toFixed(1).padStart(7)} µs/req  ${((100 * us) / total).toFixed(1).padStart(5)}%  ${fn}`);
      }
    }
  }
}
console.log(JSON.stringify(results));
for (const b of builds) {
  await b.mf.dispose();
  fs.rmSync(b.storage, { recursive: true, force: true });
}
await fake.close();
