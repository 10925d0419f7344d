#!/usr/bin/env node
// `make bench`: loads the fake Databricks directly and through the gateway (the worker built by
// `make build-test`, under workerd) with the same request, and prints one table. The difference
// between the two paths is what the gateway costs. Rows are scenarios (`scenarios()`), so a new
// kind of traffic (a rate-limited key, two deployments behind one name, ...) is one more entry.
//
// Environment: BENCH_SECONDS (per row, default 10), BENCH_WARMUP_SECONDS (per row, default 1),
// BENCH_STREAM_REQUESTS (sequential streams per path, default 200).

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';
import { startGateway, MASTER_KEY, DATABRICKS_TOKEN } from './support/gateway.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const WASM = path.join(ROOT, 'build-test', 'index_bg.wasm');

const SECONDS = positiveNumber('BENCH_SECONDS', 10);
const WARMUP_SECONDS = positiveNumber('BENCH_WARMUP_SECONDS', 1);
const STREAM_REQUESTS = Math.round(positiveNumber('BENCH_STREAM_REQUESTS', 200));
const CONNECTIONS = [1, 16];
// Per request: far above any plausible latency here, so only a hang trips it.
const REQUEST_TIMEOUT_MS = 10_000;

const MODEL = 'databricks-gpt-5-1';
const CHAT_BODY = { model: MODEL, messages: [{ role: 'user', content: 'Hello, benchmark' }], max_tokens: 16 };
const STREAM_BODY = {
  model: MODEL,
  messages: [{ role: 'user', content: 'Hello [fake:chunks=5]' }],
  max_tokens: 16,
  stream: true,
};

function positiveNumber(name, fallback) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`${name} must be a positive number, got '${raw}'`);
  return n;
}

// ------------------------------------------------------------------------------ scenarios

/** A virtual key made through the gateway's own API. */
async function virtualKey(gateway, fields) {
  const res = await fetch(`${gateway.url}/key/generate`, {
    method: 'POST',
    headers: { authorization: `Bearer ${MASTER_KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify(fields),
  });
  if (!res.ok) throw new Error(`/key/generate: ${res.status} ${await res.text()}`);
  return (await res.json()).key;
}

/**
 * The paths under test, in table order. Each is `{name, url, headers, body}`; `body` is an
 * object (the stream test swaps it for STREAM_BODY, keeping url and headers).
 * - gateway: the master key (no key lookup, no admission; usage settled after the answer);
 * - vkey: a virtual key without limits (a KV lookup, cached per isolate; no admission);
 * - limited: a virtual key with limits and a budget set too high to refuse anything, so each
 *   request pays its ledger's admission before and settlement after the upstream call;
 * - balanced: the master key on a group of two deployments (routing on the path).
 */
async function scenarios(gateway) {
  const chat = `${gateway.url}/v1/chat/completions`;
  const vkey = await virtualKey(gateway, {});
  const limited = await virtualKey(gateway, {
    rpm_limit: 100_000_000,
    tpm_limit: 1_000_000_000_000,
    max_parallel_requests: 10_000,
    max_budget: 1_000_000,
  });
  return [
    {
      name: 'direct',
      url: `${gateway.fake.url}/chat/completions`,
      headers: { authorization: `Bearer ${DATABRICKS_TOKEN}` },
      body: CHAT_BODY,
    },
    { name: 'gateway', url: chat, headers: { authorization: `Bearer ${MASTER_KEY}` }, body: CHAT_BODY },
    { name: 'vkey', url: chat, headers: { authorization: `Bearer ${vkey}` }, body: CHAT_BODY },
    { name: 'limited', url: chat, headers: { authorization: `Bearer ${limited}` }, body: CHAT_BODY },
    // Two deployments behind one name (simple-shuffle, weights 3:1).
    { name: 'balanced', url: chat, headers: { authorization: `Bearer ${MASTER_KEY}` }, body: { ...CHAT_BODY, model: 'balanced' } },
  ];
}

function requestHeaders(scenario) {
  return { 'content-type': 'application/json', ...scenario.headers };
}

// One request before any load, so a misconfigured scenario fails in a second with its body
// instead of after a whole row of non-2xx.
async function checkScenario(scenario) {
  const res = await fetch(scenario.url, {
    method: 'POST',
    headers: requestHeaders(scenario),
    body: JSON.stringify(scenario.body),
    signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${scenario.name}: ${res.status} from ${scenario.url}: ${text.slice(0, 300)}`);
}

// ------------------------------------------------------------------------------ load rows

/** Runs autocannon once; returns its result and the latency (ms) of every 2xx response. */
async function cannon(scenario, connections, seconds) {
  const latencies = [];
  const instance = autocannon({
    url: scenario.url,
    method: 'POST',
    headers: requestHeaders(scenario),
    body: JSON.stringify(scenario.body),
    connections,
    pipelining: 1,
    duration: seconds,
    timeout: REQUEST_TIMEOUT_MS / 1000,
  });
  // autocannon's own percentiles come from a histogram of whole milliseconds; the sub-ms
  // difference between the paths needs the raw (hrtime, fractional) response times.
  instance.on('response', (_client, status, _bytes, ms) => {
    if (status >= 200 && status < 300) latencies.push(ms);
  });
  const result = await instance;
  return { result, latencies };
}

/** One table row: a warm-up run (discarded), then the measured run. */
async function loadRow(scenario, connections) {
  progress(`${scenario.name}, ${connections} conn: warm-up ${WARMUP_SECONDS} s, then ${SECONDS} s`);
  await cannon(scenario, connections, WARMUP_SECONDS);
  const { result, latencies } = await cannon(scenario, connections, SECONDS);
  const sorted = Float64Array.from(latencies).sort();
  const failures = result.non2xx + result.errors;
  return {
    name: scenario.name,
    connections,
    rps: result.requests.average,
    p50: percentile(sorted, 50),
    p99: percentile(sorted, 99),
    errors: failures,
    warning:
      failures > 0 || sorted.length === 0
        ? `${scenario.name} at ${connections} conn: ${result.non2xx} non-2xx ${statusSummary(result)}, ` +
          `${result.errors} socket errors (${result.timeouts} timeouts), ${sorted.length} 2xx`
        : null,
  };
}

function statusSummary(result) {
  const codes = Object.entries(result.statusCodeStats ?? {})
    .filter(([code]) => !code.startsWith('2'))
    .map(([code, { count }]) => `${code}: ${count}`);
  return codes.length ? `(${codes.join(', ')})` : '';
}

/** Nearest-rank percentile of an ascending array; NaN when empty. */
function percentile(sorted, p) {
  if (sorted.length === 0) return NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1];
}

// ------------------------------------------------------------------------------ first chunk

/**
 * Sends one streaming request; returns ms from send to the first `data:` bytes, after reading
 * the stream to its end and checking it closed with `data: [DONE]` (a stream that stops early
 * would otherwise look fast). Returns a string describing the failure instead.
 */
async function firstChunk(scenario) {
  const started = performance.now();
  const res = await fetch(scenario.url, {
    method: 'POST',
    headers: requestHeaders(scenario),
    body: JSON.stringify(STREAM_BODY),
    signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
  });
  if (!res.ok || !res.body) return `status ${res.status}: ${(await res.text()).slice(0, 200)}`;
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let text = '';
  let firstAt = null;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    text += decoder.decode(value, { stream: true });
    if (firstAt === null && text.includes('data:')) firstAt = performance.now();
  }
  text += decoder.decode();
  if (firstAt === null) return 'no data: event';
  if (!/data: \[DONE\]\s*$/.test(text)) return `did not end with data: [DONE]: ...${JSON.stringify(text.slice(-80))}`;
  return firstAt - started;
}

/** Sequential streams through one scenario: p50/p99 of time to first chunk. */
async function streamStats(scenario, count) {
  progress(`${scenario.name}: ${count} sequential streams`);
  const times = [];
  const failures = [];
  for (let i = 0; i < count; i++) {
    let outcome;
    try {
      outcome = await firstChunk(scenario);
    } catch (err) {
      outcome = err?.message ?? String(err);
    }
    if (typeof outcome === 'number') times.push(outcome);
    else failures.push(outcome);
  }
  const sorted = Float64Array.from(times).sort();
  return {
    name: scenario.name,
    p50: percentile(sorted, 50),
    p99: percentile(sorted, 99),
    warning: failures.length
      ? `${scenario.name} streams: ${failures.length} of ${count} failed, first: ${failures[0]}`
      : null,
  };
}

// ------------------------------------------------------------------------------ process facts

/** VmRSS and VmHWM (peak) in kB of the workerd process Miniflare spawned, or null. */
function workerdMemory() {
  try {
    for (const entry of fs.readdirSync('/proc')) {
      if (!/^\d+$/.test(entry)) continue;
      let status;
      try {
        status = fs.readFileSync(`/proc/${entry}/status`, 'utf8');
      } catch {
        continue; // exited while scanning
      }
      if (field(status, 'Name') !== 'workerd' || Number(field(status, 'PPid')) !== process.pid) continue;
      return { rss: parseInt(field(status, 'VmRSS'), 10), peak: parseInt(field(status, 'VmHWM'), 10) };
    }
  } catch {
    // no /proc (not Linux): reported as n/a
  }
  return null;
}

function field(status, name) {
  const match = new RegExp(`^${name}:\\s*(.*)$`, 'm').exec(status);
  return match ? match[1].trim() : null;
}

function wasmSizes() {
  try {
    const bytes = fs.readFileSync(WASM);
    return { raw: bytes.length, gzip: zlib.gzipSync(bytes, { level: 9 }).length };
  } catch {
    return null;
  }
}

// ------------------------------------------------------------------------------ output

function progress(message) {
  process.stderr.write(`bench: ${message}\n`);
}

const ms = (n) => (Number.isFinite(n) ? n.toFixed(2) : 'n/a');
const signedMs = (n) => (Number.isFinite(n) ? `${n >= 0 ? '+' : ''}${n.toFixed(2)} ms` : 'n/a');
const mb = (kb) => (Number.isFinite(kb) ? `${(kb / 1024).toFixed(1)} MB` : 'n/a');

/** Plain-text table: first column left-aligned, the others right-aligned. */
function table(header, rows) {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells) =>
    cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  return [line(header), ...rows.map(line)].join('\n');
}

function loadTable(rows) {
  return table(
    ['path', 'conns', 'req/s', 'p50 ms', 'p99 ms', 'errors'],
    rows.map((r) => [r.name, String(r.connections), r.rps.toFixed(0), ms(r.p50), ms(r.p99), String(r.errors)]),
  );
}

function memoryLine(before, after) {
  if (!before && !after) return 'workerd RSS: n/a';
  return `workerd RSS: before load ${mb(before?.rss)}, after ${mb(after?.rss)}, peak ${mb(after?.peak)}`;
}

function report({ rows, streams, wasm, memBefore, memAfter }) {
  const cpu = os.cpus()[0]?.model?.trim() ?? 'unknown cpu';
  const cores = os.availableParallelism?.() ?? os.cpus().length;
  const find = (name, connections) => rows.find((r) => r.name === name && r.connections === connections);
  const direct1 = find('direct', 1);
  const gateway1 = find('gateway', 1);
  const [sDirect, sGateway] = ['direct', 'gateway'].map((name) => streams.find((s) => s.name === name));
  const out = [
    `databricks-gateway benchmark  (node ${process.version}, ${cores} cores ${cpu}, ${SECONDS} s per row)`,
    loadTable(rows),
    `added latency at 1 conn: p50 ${signedMs(gateway1.p50 - direct1.p50)}, p99 ${signedMs(gateway1.p99 - direct1.p99)}`,
    `stream first chunk (${STREAM_REQUESTS} sequential): direct p50 ${ms(sDirect.p50)} p99 ${ms(sDirect.p99)}; ` +
      `gateway p50 ${ms(sGateway.p50)} p99 ${ms(sGateway.p99)}; added p50 ${signedMs(sGateway.p50 - sDirect.p50)}, ` +
      `p99 ${signedMs(sGateway.p99 - sDirect.p99)}`,
    wasm
      ? `wasm (build-test/index_bg.wasm): ${wasm.raw} bytes, ${wasm.gzip} gzip -9`
      : 'wasm (build-test/index_bg.wasm): n/a',
    memoryLine(memBefore, memAfter),
  ];
  console.log(out.join('\n'));
}

// ------------------------------------------------------------------------------ main

// Everything above is bounded (fixed durations, per-request timeouts); this is the backstop
// should something still hang, e.g. workerd not shutting down.
function watchdog() {
  const rowCount = CONNECTIONS.length * 5;
  const budgetS = rowCount * (SECONDS + WARMUP_SECONDS + 15) + 2 * STREAM_REQUESTS * 0.5 + 120;
  setTimeout(() => {
    console.error(`bench: still running after ${budgetS} s; giving up`);
    process.exit(2);
  }, budgetS * 1000).unref();
}

async function main() {
  if (!fs.existsSync(WASM)) throw new Error(`${WASM} is missing: run \`make build-test\` first`);
  watchdog();
  progress('starting the fake Databricks and the gateway');
  const gateway = await startGateway({ fake: { record: false } });
  try {
    const paths = await scenarios(gateway);
    for (const scenario of paths) await checkScenario(scenario);
    const memBefore = workerdMemory();

    const rows = [];
    for (const connections of CONNECTIONS) {
      for (const scenario of paths) rows.push(await loadRow(scenario, connections));
    }
    const streams = [];
    for (const scenario of paths.filter((p) => p.name === 'direct' || p.name === 'gateway')) {
      streams.push(await streamStats(scenario, STREAM_REQUESTS));
    }

    const memAfter = workerdMemory();
    report({ rows, streams, wasm: wasmSizes(), memBefore, memAfter });

    const warnings = [...rows, ...streams].map((r) => r.warning).filter(Boolean);
    for (const w of warnings) console.log(`WARNING: ${w}`);
    return warnings.length ? 1 : 0;
  } finally {
    await gateway.close();
  }
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    console.error(`bench: ${err?.stack ?? err}`);
    process.exitCode = 1;
  },
);
