#!/usr/bin/env node
// `make bench`: the same chat request sent to the fake Databricks directly, through a trivial
// JavaScript worker (the platform's ceiling) and through the gateway (the worker `make
// build-test` built, under workerd), and one markdown table of what each path sustains.
//
// What counts (so that a fast failure never looks like throughput):
// - a request counts only if it answered 2xx AND its body validated: a chat completion with
//   `choices[0].message`, the `model` that path should name, and a `usage` object; a stream
//   whose every event is a JSON chunk, with content, ending in exactly one `data: [DONE]`, and
//   no error event (`data: {"error":...}`) anywhere;
// - anything else is an error of its row, by kind (`http 429`, `invalid body`, `error event`,
//   `timeout`, `socket`), shown in the table and never in req/s;
// - latencies (and a stream's time to first chunk) come from counted requests only.
// How it is aggregated (so that a noisy moment on a shared machine does not decide a row):
// - each cell (a row at a number of connections) runs once per round, in a shuffled order per
//   round, BENCH_ROUNDS rounds after one discarded warm-up pass; the table shows the median over
//   rounds of req/s, p50 and p99, and the min–max of req/s; between runs it waits for workerd
//   to go idle, so that the background work a row leaves is not billed to the next.
// The load is closed-loop: each connection is its own undici Client (one socket, one request
// in flight) sending its next request as soon as the previous one is read to its end.
//
// Environment: BENCH_SECONDS (per cell and round, default 4), BENCH_ROUNDS (default 3),
// BENCH_WARMUP_SECONDS (per cell, once, default 1), BENCH_CONNECTIONS (default "1,16"),
// BENCH_STREAM_CONNECTIONS (default "1"), BENCH_SEED (the shuffles, default 1),
// BENCH_STORAGE_DIR (where the gateway's KV and Durable Objects keep their files, default
// /dev/shm when there is one), BENCH_BASELINE (a directory holding another build of the worker
// with the test config, e.g. an earlier commit's: its gateway, vkey, limited and stream rows run
// beside this build's in the same rounds, named `… (before)`; `make bench BASELINE=<commit>`
// builds one). Writes build-test/bench.json. Exits 1 when any row had errors.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { fileURLToPath } from 'node:url';
import { Miniflare } from 'miniflare';
import { Client } from 'undici';
import { startGateway, MASTER_KEY, DATABRICKS_TOKEN, COMPATIBILITY_DATE, ASSETS } from './support/gateway.mjs';
import { positiveNumber, mulberry32 } from './support/knobs.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const WASM = path.join(ROOT, 'build-test', 'index_bg.wasm');
const JSON_OUT = path.join(ROOT, 'build-test', 'bench.json');
const CEILING_SCRIPT = path.join(ROOT, 'tests', 'support', 'ceiling-worker.js');

const SECONDS = positiveNumber('BENCH_SECONDS', 4);
const ROUNDS = Math.round(positiveNumber('BENCH_ROUNDS', 3));
const WARMUP_SECONDS = positiveNumber('BENCH_WARMUP_SECONDS', 1);
const CONNECTIONS = numberList('BENCH_CONNECTIONS', [1, 8]);
const BASELINE = process.env.BENCH_BASELINE ? path.resolve(process.env.BENCH_BASELINE) : null;
const SEED = Math.round(positiveNumber('BENCH_SEED', 1));
// Streams run at one connection by default: their point is the time to first chunk.
const STREAM_CONNECTIONS = numberList('BENCH_STREAM_CONNECTIONS', [1]);
// Miniflare keeps KV and Durable Object storage under os.tmpdir() by default, on disk here: every
// settlement's SQLite commit then waits on a disk the whole machine shares, and the `vkey` and
// `limited` rows measure that disk (about 3× slower on this machine), not the gateway. A tmpfs
// keeps the Durable Objects' own cost and drops the fsync.
const STORAGE_ROOT = process.env.BENCH_STORAGE_DIR || (fs.existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir());
// Inactivity limits per request: far above any plausible latency here, so only a hang trips them.
const REQUEST_TIMEOUT_MS = 10_000;

const MODEL = 'databricks-gpt-5-1';
// What the fake names in its answers for an endpoint (its `-served` suffix).
const SERVED_MODEL = `${MODEL}-served`;
const CHAT_BODY = { model: MODEL, messages: [{ role: 'user', content: 'Hello, benchmark' }], max_tokens: 16 };
const STREAM_BODY = {
  model: MODEL,
  messages: [{ role: 'user', content: 'Hello [fake:chunks=5]' }],
  max_tokens: 16,
  stream: true,
};

function numberList(name, fallback) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const list = raw.split(',').map(Number);
  if (!list.every((n) => Number.isInteger(n) && n > 0)) throw new Error(`${name} must be like "1,16", got '${raw}'`);
  return list;
}

// ------------------------------------------------------------------------------ scenarios

// Limits and a budget far above what a run can use: nothing refused, every request admitted
// before and settled after its upstream call.
const LIMITED_KEY = { rpm_limit: 100_000_000, tpm_limit: 1_000_000_000_000, max_parallel_requests: 10_000, max_budget: 1_000_000 };

/** A team made through the gateway's own API (`/team/new`). */
async function team(gateway, fields) {
  const res = await fetch(`${gateway.url}/team/new`, {
    method: 'POST',
    headers: { authorization: `Bearer ${MASTER_KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify(fields),
  });
  if (!res.ok) throw new Error(`/team/new: ${res.status} ${await res.text()}`);
  return (await res.json()).team_id;
}

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
 * The ceiling: ceiling-worker.js under its own Miniflare (same workerd, same entry path). With
 * `assets`, deployed as the gateway is (wrangler.toml's [assets], run_worker_first): Miniflare's
 * asset-router worker then runs in front of it for every request, as it does for the gateway;
 * without, the bare worker (`bare ceiling`, shown for reference).
 */
async function startCeiling(fakeUrl, assets) {
  const mf = new Miniflare({
    scriptPath: CEILING_SCRIPT,
    modules: true,
    compatibilityDate: COMPATIBILITY_DATE,
    bindings: { UPSTREAM: fakeUrl },
    ...(assets ? { assets: ASSETS } : {}),
    host: '127.0.0.1',
    port: 0,
  });
  const url = (await mf.ready).toString().replace(/\/$/, '');
  return { url, close: () => mf.dispose() };
}

/**
 * The rows, in table order. Each is `{name, kind, url, headers, body, model, runtime}`:
 * `kind` is 'chat' or 'stream' (how the answer is read and validated), `model` the name the
 * answer must carry, `runtime` which workerd process serves it (for its CPU time).
 * - direct: the fake alone (no worker at all);
 * - ceiling: a JS worker making one loopback fetch to the fake, deployed as the gateway is
 *   (with [assets], so Miniflare's asset router runs in front of it): what the platform does
 *   here for a worker of this shape, the reference of every `vs ceiling`;
 * - bare ceiling: the same worker without assets (no asset router): what that router costs;
 * - gateway: the master key (no key lookup, no admission; usage settled after the answer);
 * - vkey: a virtual key without limits (a KV lookup, cached per isolate; no admission);
 * - limited: a key with limits and a budget far above what the run can use, so nothing is
 *   refused (a refusal would be an error) but every request pays its ledger's admission
 *   before and settlement after the upstream call;
 * - team: a key without limits in a team without limits (the team's record read through the
 *   isolate's cache; both spends settled in the isolate's batches, no admission);
 * - limited team: the limited key in a team with the same limits: two ledgers admit each
 *   request at once and both settle it, so this row against `limited` is what an extra party
 *   with limits costs;
 * - balanced: the master key on a group of two deployments (simple-shuffle, weights 3:1).
 */
async function scenarios(gateway, ceiling, bareCeiling, baseline) {
  const chat = `${gateway.url}/v1/chat/completions`;
  const master = { authorization: `Bearer ${MASTER_KEY}` };
  const upstream = { authorization: `Bearer ${DATABRICKS_TOKEN}` };
  const vkey = await virtualKey(gateway, {});
  const limited = await virtualKey(gateway, LIMITED_KEY);
  const teamKey = await virtualKey(gateway, { team_id: await team(gateway, {}) });
  const limitedTeamKey = await virtualKey(gateway, { ...LIMITED_KEY, team_id: await team(gateway, LIMITED_KEY) });
  const direct = { url: `${gateway.fake.url}/chat/completions`, headers: upstream, model: SERVED_MODEL, runtime: null };
  const viaCeiling = { url: `${ceiling.url}/chat/completions`, headers: upstream, model: SERVED_MODEL, runtime: 'ceiling' };
  const viaBareCeiling = { url: `${bareCeiling.url}/chat/completions`, headers: upstream, model: SERVED_MODEL, runtime: 'bareCeiling' };
  const viaGateway = { url: chat, headers: master, model: MODEL, runtime: 'gateway' };
  const chatRow = (name, path, extra = {}) => ({ name, kind: 'chat', body: CHAT_BODY, ...path, ...extra });
  const streamRow = (name, path) => ({ name, kind: 'stream', body: STREAM_BODY, ...path });
  return [
    chatRow('direct', direct),
    chatRow('ceiling', viaCeiling),
    chatRow('bare ceiling', viaBareCeiling),
    chatRow('gateway', viaGateway),
    chatRow('vkey', viaGateway, { headers: { authorization: `Bearer ${vkey}` } }),
    chatRow('limited', viaGateway, { headers: { authorization: `Bearer ${limited}` } }),
    chatRow('team', viaGateway, { headers: { authorization: `Bearer ${teamKey}` } }),
    chatRow('limited team', viaGateway, { headers: { authorization: `Bearer ${limitedTeamKey}` } }),
    chatRow('balanced', viaGateway, { body: { ...CHAT_BODY, model: 'balanced' }, model: 'balanced' }),
    streamRow('stream direct', direct),
    streamRow('stream ceiling', viaCeiling),
    streamRow('stream gateway', viaGateway),
    ...(baseline ? await baselineRows(baseline, chatRow, streamRow) : []),
  ];
}

/** The same master, vkey, limited and stream rows through the baseline build. */
async function baselineRows(baseline, chatRow, streamRow) {
  const via = { url: `${baseline.url}/v1/chat/completions`, headers: { authorization: `Bearer ${MASTER_KEY}` }, model: MODEL, runtime: 'baseline' };
  const vkey = await virtualKey(baseline, {});
  const limited = await virtualKey(baseline, LIMITED_KEY);
  return [
    chatRow('gateway (before)', via),
    chatRow('vkey (before)', via, { headers: { authorization: `Bearer ${vkey}` } }),
    chatRow('limited (before)', via, { headers: { authorization: `Bearer ${limited}` } }),
    streamRow('stream gateway (before)', via),
  ];
}

/** Every (row, connections) pair; one cell is one measured run per round. */
function cells(rows) {
  return rows.flatMap((row) =>
    (row.kind === 'stream' ? STREAM_CONNECTIONS : CONNECTIONS).map((connections) => ({
      row,
      connections,
      key: `${row.name} @${connections}`,
      runs: [],
    })),
  );
}

// ------------------------------------------------------------------------------ validation
// Each returns null when the body is what a client should get, or a sentence saying why not.

function validateChat(text, model) {
  let v;
  try {
    v = JSON.parse(text);
  } catch {
    return `not JSON: ${text.slice(0, 120)}`;
  }
  if (!isObject(v)) return 'not a JSON object';
  if (v.model !== model) return `model ${JSON.stringify(v.model)}, expected ${JSON.stringify(model)}`;
  const message = Array.isArray(v.choices) ? v.choices[0]?.message : undefined;
  if (!isObject(message)) return 'no choices[0].message';
  if (message.role !== 'assistant') return `choices[0].message.role ${JSON.stringify(message.role)}`;
  if (typeof message.content !== 'string' || message.content === '') return 'choices[0].message.content is not a non-empty string';
  return usageProblem(v.usage);
}

function usageProblem(usage) {
  if (!isObject(usage)) return 'no usage object';
  for (const field of ['prompt_tokens', 'completion_tokens', 'total_tokens']) {
    if (!Number.isInteger(usage[field]) || usage[field] < 0) return `usage.${field} is ${JSON.stringify(usage[field])}`;
  }
  return null;
}

/**
 * A stream is good when every event is a JSON chunk naming the right model, at least one
 * carries content, none is an error event, and the last (and only the last) is `[DONE]`.
 * Usage is not required: OpenAI sends it only when asked (stream_options.include_usage).
 */
function validateStream(text, model) {
  const events = sseData(text);
  const done = events.indexOf('[DONE]');
  if (done === -1) return `no data: [DONE] (${events.length} events)`;
  if (done !== events.length - 1) return `data: [DONE] is event ${done + 1} of ${events.length}`;
  let content = false;
  for (const data of events.slice(0, -1)) {
    let chunk;
    try {
      chunk = JSON.parse(data);
    } catch {
      return `event is not JSON: ${data.slice(0, 120)}`;
    }
    if (!isObject(chunk)) return 'event is not a JSON object';
    if ('error' in chunk) return `error event: ${data.slice(0, 200)}`;
    if (!Array.isArray(chunk.choices)) return 'chunk without choices';
    if (chunk.model !== model) return `chunk model ${JSON.stringify(chunk.model)}, expected ${JSON.stringify(model)}`;
    const delta = chunk.choices[0]?.delta;
    if (typeof delta?.content === 'string' && delta.content !== '') content = true;
  }
  return content ? null : 'no chunk with content';
}

/** The `data:` payloads of an SSE body, one per event (multi-line data joined by \n). */
function sseData(text) {
  return text
    .split(/\r?\n\r?\n/)
    .map((event) =>
      event
        .split(/\r?\n/)
        .filter((line) => line.startsWith('data:'))
        .map((line) => line.slice(line.startsWith('data: ') ? 6 : 5))
        .join('\n'),
    )
    .filter((data) => data !== '');
}

const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);

// ------------------------------------------------------------------------------ one request
// Each resolves to {ok: true, ms, firstMs?} or {ok: false, kind, detail}; it never throws.

function requestOptions(row) {
  const url = new URL(row.url);
  return {
    origin: url.origin,
    dispatch: {
      path: url.pathname,
      method: 'POST',
      headers: { 'content-type': 'application/json', ...row.headers },
      body: JSON.stringify(row.body),
    },
  };
}

async function chatRequest(client, row, options) {
  const started = performance.now();
  const { statusCode, body } = await client.request(options.dispatch);
  const text = await body.text();
  const ms = performance.now() - started;
  if (statusCode < 200 || statusCode >= 300) return failure(`http ${statusCode}`, text.slice(0, 200));
  const problem = validateChat(text, row.model);
  return problem ? failure('invalid body', problem) : { ok: true, ms };
}

async function streamRequest(client, row, options) {
  const started = performance.now();
  const { statusCode, headers, body } = await client.request(options.dispatch);
  const decoder = new TextDecoder();
  let text = '';
  let firstMs = null;
  for await (const part of body) {
    text += decoder.decode(part, { stream: true });
    if (firstMs === null && text.includes('data:')) firstMs = performance.now() - started;
  }
  text += decoder.decode();
  const ms = performance.now() - started;
  if (statusCode < 200 || statusCode >= 300) return failure(`http ${statusCode}`, text.slice(0, 200));
  if (!String(headers['content-type']).startsWith('text/event-stream')) {
    return failure('invalid body', `content-type ${headers['content-type']}`);
  }
  const problem = validateStream(text, row.model);
  if (problem) return failure(problem.startsWith('error event') ? 'error event' : 'invalid body', problem);
  return { ok: true, ms, firstMs };
}

async function oneRequest(client, row, options) {
  try {
    return await (row.kind === 'stream' ? streamRequest : chatRequest)(client, row, options);
  } catch (err) {
    return failure(TIMEOUT_CODES.has(err?.code) ? 'timeout' : 'socket', `${err?.code ?? ''} ${err?.message ?? err}`.trim());
  }
}

const TIMEOUT_CODES = new Set(['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'UND_ERR_CONNECT_TIMEOUT']);

function failure(kind, detail) {
  return { ok: false, kind, detail };
}

// ------------------------------------------------------------------------------ one run

/**
 * Runs one cell for `seconds`: `connections` loops, each on its own socket, each sending its
 * next request when the previous one is read. Requests started before the deadline finish
 * (bounded by the timeouts) and count; the rate divides by the time until the last one did.
 */
async function runCell(cell, seconds) {
  const options = requestOptions(cell.row);
  const clients = Array.from(
    { length: cell.connections },
    () => new Client(options.origin, { pipelining: 1, headersTimeout: REQUEST_TIMEOUT_MS, bodyTimeout: REQUEST_TIMEOUT_MS }),
  );
  const tally = { good: 0, latencies: [], firsts: [], errors: {} };
  const started = performance.now();
  const deadline = started + seconds * 1000;
  await Promise.all(clients.map((client) => closedLoop(client, cell.row, options, deadline, tally)));
  const elapsed = (performance.now() - started) / 1000;
  await Promise.all(clients.map((client) => client.destroy()));
  return summarise(tally, elapsed);
}

/**
 * A run, then the wait until workerd is idle again. The serving workerd's CPU time is read
 * across both, so that a row is charged for the background work it leaves (settlements) and
 * the next row starts on an idle runtime.
 */
async function measureCell(cell, seconds, pids) {
  const pid = cell.row.runtime ? pids[cell.row.runtime] : null;
  const cpuBefore = cpuTicks(pid);
  const run = await runCell(cell, seconds);
  run.busyAfterMs = await quiesce(pids);
  const cpuAfter = cpuTicks(pid);
  // All of the process's threads (the worker, its Durable Objects, Miniflare's entry); null
  // for `direct`, which has no workerd.
  run.cpuMsPerRequest =
    cpuBefore === null || cpuAfter === null || run.good === 0 ? null : ((cpuAfter - cpuBefore) * TICK_MS) / run.good;
  return run;
}

async function closedLoop(client, row, options, deadline, tally) {
  while (performance.now() < deadline) {
    const outcome = await oneRequest(client, row, options);
    if (outcome.ok) {
      tally.good += 1;
      tally.latencies.push(outcome.ms);
      if (outcome.firstMs != null) tally.firsts.push(outcome.firstMs);
    } else {
      const seen = (tally.errors[outcome.kind] ??= { count: 0, sample: outcome.detail });
      seen.count += 1;
    }
  }
}

/** One run's figures: rates from counted requests only, percentiles of their latencies. */
function summarise(tally, elapsed) {
  const sorted = Float64Array.from(tally.latencies).sort();
  const firsts = Float64Array.from(tally.firsts).sort();
  const errors = Object.values(tally.errors).reduce((n, e) => n + e.count, 0);
  return {
    seconds: elapsed,
    good: tally.good,
    errors,
    errorKinds: tally.errors,
    rps: tally.good / elapsed,
    p50: percentile(sorted, 50),
    p99: percentile(sorted, 99),
    firstP50: percentile(firsts, 50),
    firstP99: percentile(firsts, 99),
  };
}

/** Nearest-rank percentile of an ascending array; NaN when empty. */
function percentile(sorted, p) {
  if (sorted.length === 0) return NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1];
}

// ------------------------------------------------------------------------------ rounds

/**
 * One warm-up pass (discarded: JIT, wasm tier-up, caches, first connections), then ROUNDS
 * rounds, each running every cell once in its own shuffled order, so that each row samples
 * different moments of the machine and none always runs right after the same neighbour.
 */
async function runRounds(allCells, pids) {
  const random = mulberry32(SEED);
  for (const cell of allCells) {
    progress(`warm-up: ${cell.key}, ${WARMUP_SECONDS} s`);
    await measureCell(cell, WARMUP_SECONDS, pids);
  }
  for (let round = 1; round <= ROUNDS; round++) {
    for (const cell of shuffled(allCells, random)) {
      const run = await measureCell(cell, SECONDS, pids);
      cell.runs.push(run);
      const busy = run.busyAfterMs === null ? `still busy after ${QUIESCE_MAX_MS} ms` : `idle after ${run.busyAfterMs.toFixed(0)} ms`;
      progress(`round ${round}/${ROUNDS}: ${cell.key}: ${run.rps.toFixed(0)} req/s, ${run.errors} errors, workerd ${busy}`);
    }
  }
}

/** Fisher–Yates with a seeded generator: reproducible orders for a given BENCH_SEED. */
function shuffled(list, random) {
  const out = [...list];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

/**
 * Waits (at most QUIESCE_MAX_MS) until the workerd processes are idle: work a row leaves behind
 * (usage settled in the background, Durable Object writes) must not be billed to the next row.
 * Returns how long that took, or null when they were still busy at the cap: the backlog a row
 * leaves is a finding of its own (kept with the run, and listed under the table).
 */
async function quiesce(pids) {
  const started = performance.now();
  const busy = () => Object.values(pids).map(cpuTicks);
  let before = busy();
  while (performance.now() - started < QUIESCE_MAX_MS) {
    await sleep(QUIESCE_WINDOW_MS);
    const after = busy();
    // At most one clock tick (10 ms) per window in every process: idle.
    if (after.every((t, i) => t === null || before[i] === null || t - before[i] <= 1)) {
      return Math.max(0, performance.now() - started - QUIESCE_WINDOW_MS);
    }
    before = after;
  }
  return null;
}

const QUIESCE_WINDOW_MS = 200;
const QUIESCE_MAX_MS = 5000;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** The median, min and max of each figure over a cell's rounds. */
function aggregate(cell) {
  const over = (field) => cell.runs.map((r) => r[field]).filter(Number.isFinite);
  const rps = over('rps');
  const errorKinds = {};
  for (const run of cell.runs) {
    for (const [kind, { count, sample }] of Object.entries(run.errorKinds)) {
      errorKinds[kind] ??= { count: 0, sample };
      errorKinds[kind].count += count;
    }
  }
  return {
    name: cell.row.name,
    kind: cell.row.kind,
    connections: cell.connections,
    rps: { median: median(rps), min: Math.min(...rps), max: Math.max(...rps) },
    p50: median(over('p50')),
    p99: median(over('p99')),
    firstP50: median(over('firstP50')),
    firstP99: median(over('firstP99')),
    cpuMsPerRequest: median(over('cpuMsPerRequest')),
    good: cell.runs.reduce((n, r) => n + r.good, 0),
    errors: cell.runs.reduce((n, r) => n + r.errors, 0),
    errorKinds,
    rounds: cell.runs,
  };
}

function median(values) {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** Adds `vsCeiling` and `vsMaster`: median req/s over the ceiling's / the master key's row of
 * the same kind at the same connections. */
function withRatios(rows) {
  const ref = (kind, name, connections) =>
    rows.find((r) => r.kind === kind && r.name === name && r.connections === connections);
  return rows.map((r) => {
    const prefix = r.kind === 'stream' ? 'stream ' : '';
    const suffix = r.name.endsWith(' (before)') ? ' (before)' : '';
    const ceiling = ref(r.kind, `${prefix}ceiling`, r.connections);
    const master = ref(r.kind, `${prefix}gateway${suffix}`, r.connections);
    return { ...r, vsCeiling: ratio(r, ceiling), vsMaster: ratio(r, master) };
  });
}

const ratio = (row, base) => (base && base.rps.median > 0 ? row.rps.median / base.rps.median : NaN);

// ------------------------------------------------------------------------------ process facts

const TICK_MS = 10; // USER_HZ is 100 on Linux

/** The pids of the workerd processes this process spawned. */
function workerdPids() {
  const pids = [];
  try {
    for (const entry of fs.readdirSync('/proc')) {
      if (!/^\d+$/.test(entry)) continue;
      const status = readProc(`/proc/${entry}/status`);
      if (status && field(status, 'Name') === 'workerd' && Number(field(status, 'PPid')) === process.pid) pids.push(Number(entry));
    }
  } catch {
    // no /proc (not Linux): no CPU or memory figures
  }
  return pids;
}

/** utime + stime of a process, in clock ticks, or null. */
function cpuTicks(pid) {
  if (!pid) return null;
  const stat = readProc(`/proc/${pid}/stat`);
  if (!stat) return null;
  // Fields after the command name (which may hold spaces), 1-based from field 3.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(fields[11]) + Number(fields[12]);
}

/** VmRSS and VmHWM (peak) in kB, or null. */
function memory(pid) {
  const status = pid ? readProc(`/proc/${pid}/status`) : null;
  if (!status) return null;
  return { rss: parseInt(field(status, 'VmRSS'), 10), peak: parseInt(field(status, 'VmHWM'), 10) };
}

function readProc(file) {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return null; // exited while scanning, or no /proc
  }
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

const fixed = (n, digits = 2) => (Number.isFinite(n) ? n.toFixed(digits) : '–');
const times = (n) => (Number.isFinite(n) ? `${n.toFixed(2)}×` : '–');
const signedMs = (n) => (Number.isFinite(n) ? `${n >= 0 ? '+' : ''}${n.toFixed(2)} ms` : 'n/a');
const mb = (kb) => (Number.isFinite(kb) ? `${(kb / 1024).toFixed(1)} MB` : 'n/a');

function markdownTable(rows) {
  const header = [
    'row', 'conns', 'req/s', 'min–max', 'p50 ms', 'p99 ms', '1st chunk p50', '1st chunk p99',
    'errors', 'workerd CPU ms/req', 'vs ceiling', 'vs master',
  ];
  const lines = rows.map((r) => [
    r.name,
    String(r.connections),
    fixed(r.rps.median, 0),
    `${fixed(r.rps.min, 0)}–${fixed(r.rps.max, 0)}`,
    fixed(r.p50),
    fixed(r.p99),
    r.kind === 'stream' ? fixed(r.firstP50) : '–',
    r.kind === 'stream' ? fixed(r.firstP99) : '–',
    String(r.errors),
    fixed(r.cpuMsPerRequest),
    times(r.vsCeiling),
    times(r.vsMaster),
  ]);
  const row = (cells) => `| ${cells.join(' | ')} |`;
  const rule = `|${header.map((_, i) => (i < 1 ? ' --- ' : ' ---: ')).join('|')}|`;
  return [row(header), rule, ...lines.map(row)].join('\n');
}

/** The gateway's added latency at one connection, against the ceiling and the bare fake. */
function addedLatency(rows) {
  const find = (name) => rows.find((r) => r.name === name && r.connections === 1);
  const [direct, ceiling, gateway] = ['direct', 'ceiling', 'gateway'].map(find);
  const [sCeiling, sGateway] = ['stream ceiling', 'stream gateway'].map(find);
  const lines = [];
  if (gateway && ceiling) {
    lines.push(`gateway − ceiling at 1 conn: p50 ${signedMs(gateway.p50 - ceiling.p50)}, p99 ${signedMs(gateway.p99 - ceiling.p99)}`);
  }
  if (gateway && direct) {
    lines.push(`gateway − direct at 1 conn: p50 ${signedMs(gateway.p50 - direct.p50)}, p99 ${signedMs(gateway.p99 - direct.p99)}`);
  }
  if (sGateway && sCeiling) {
    lines.push(`stream first chunk, gateway − ceiling: p50 ${signedMs(sGateway.firstP50 - sCeiling.firstP50)}`);
  }
  const before = find('gateway (before)');
  if (before && ceiling) {
    lines.push(`gateway (before) − ceiling at 1 conn: p50 ${signedMs(before.p50 - ceiling.p50)}, p99 ${signedMs(before.p99 - ceiling.p99)}`);
  }
  return lines;
}

function errorLines(rows) {
  return rows.flatMap((r) =>
    Object.entries(r.errorKinds).map(
      ([kind, { count, sample }]) => `ERRORS ${r.name} @${r.connections}: ${count} × ${kind}, first: ${sample}`,
    ),
  );
}

// Rows after which workerd was still working at the cap: background work outlived the run.
function backlogLines(rows) {
  return rows
    .filter((r) => r.rounds.some((run) => run.busyAfterMs === null))
    .map((r) => {
      const n = r.rounds.filter((run) => run.busyAfterMs === null).length;
      return `BACKLOG ${r.name} @${r.connections}: workerd still busy ${QUIESCE_MAX_MS} ms after the run in ${n} of ${r.rounds.length} rounds`;
    });
}

function machine() {
  return {
    node: process.version,
    cores: os.availableParallelism?.() ?? os.cpus().length,
    cpu: os.cpus()[0]?.model?.trim() ?? 'unknown cpu',
    loadavg: os.loadavg().map((n) => Number(n.toFixed(2))),
  };
}

function report({ rows, wasm, memBefore, memAfter, host }) {
  const table = markdownTable(rows);
  const method =
    `${ROUNDS} rounds × ${SECONDS} s per cell, shuffled per round (seed ${SEED}), after a ${WARMUP_SECONDS} s warm-up per cell; ` +
    `medians over rounds; only 2xx with a validated body count; KV and Durable Objects under ${STORAGE_ROOT}`;
  const out = [
    `databricks-gateway benchmark  (node ${host.node}, ${host.cores} cores ${host.cpu}, load average ${host.loadavg.join(' ')})`,
    method,
    '',
    table,
    '',
    ...addedLatency(rows),
    wasm ? `wasm (build-test/index_bg.wasm): ${wasm.raw} bytes, ${wasm.gzip} gzip -9` : 'wasm: n/a',
    memBefore || memAfter
      ? `gateway workerd RSS: before load ${mb(memBefore?.rss)}, after ${mb(memAfter?.rss)}, peak ${mb(memAfter?.peak)}`
      : 'gateway workerd RSS: n/a',
    ...backlogLines(rows),
    ...errorLines(rows),
  ];
  console.log(out.join('\n'));
  const json = {
    when: new Date().toISOString(),
    method: {
      rounds: ROUNDS,
      secondsPerCell: SECONDS,
      warmupSeconds: WARMUP_SECONDS,
      connections: CONNECTIONS,
      streamConnections: STREAM_CONNECTIONS,
      seed: SEED,
      storage: STORAGE_ROOT,
    },
    machine: host,
    wasm,
    memory: { before: memBefore, after: memAfter },
    table,
    rows,
  };
  fs.writeFileSync(JSON_OUT, `${JSON.stringify(json, null, 2)}\n`);
  progress(`wrote ${path.relative(ROOT, JSON_OUT)}`);
}

// ------------------------------------------------------------------------------ main

// One request per row before any load, so a misconfigured row fails in a second with its
// reason instead of after a whole run of errors.
async function checkRows(rows) {
  for (const row of rows) {
    const options = requestOptions(row);
    const client = new Client(options.origin);
    const outcome = await oneRequest(client, row, options);
    await client.destroy();
    if (!outcome.ok) throw new Error(`${row.name}: ${outcome.kind}: ${outcome.detail}`);
  }
}

// Everything is bounded (fixed durations, per-request timeouts, a capped quiesce); this is the
// backstop should something still hang, e.g. workerd not shutting down.
function watchdog(cellCount, cleanUp) {
  const quiesceS = QUIESCE_MAX_MS / 1000;
  const perCell = ROUNDS * (SECONDS + 2 * REQUEST_TIMEOUT_MS / 1000 + quiesceS) + WARMUP_SECONDS + quiesceS;
  const budgetS = Math.ceil(cellCount * perCell + 120);
  setTimeout(() => {
    console.error(`bench: still running after ${budgetS} s; giving up`);
    cleanUp();
    process.exit(2);
  }, budgetS * 1000).unref();
}

async function main() {
  if (!fs.existsSync(WASM)) throw new Error(`${WASM} is missing: run \`make build-test\` first`);
  progress('starting the fake Databricks, the gateway and the ceiling worker');
  const storage = fs.mkdtempSync(path.join(STORAGE_ROOT, 'gateway-bench-'));
  const gateway = await startGateway({ fake: { record: false }, persistDir: storage });
  // The gateway's workerd is the only one until the ceiling starts.
  const [gatewayPid] = workerdPids();
  const ceiling = await startCeiling(gateway.fake.url, true);
  const ceilingPid = workerdPids().find((pid) => pid !== gatewayPid);
  const bareCeiling = await startCeiling(gateway.fake.url, false);
  const bareCeilingPid = workerdPids().find((pid) => pid !== gatewayPid && pid !== ceilingPid);
  const baselineStorage = BASELINE ? fs.mkdtempSync(path.join(STORAGE_ROOT, 'gateway-bench-base-')) : null;
  const baseline = BASELINE
    ? await startGateway({ fake: { record: false }, persistDir: baselineStorage, scriptDir: path.relative(ROOT, BASELINE) })
    : null;
  const known = [gatewayPid, ceilingPid, bareCeilingPid];
  const baselinePid = BASELINE ? workerdPids().find((pid) => !known.includes(pid)) : null;
  const pids = { gateway: gatewayPid, ceiling: ceilingPid, bareCeiling: bareCeilingPid, baseline: baselinePid };
  try {
    const rows = await scenarios(gateway, ceiling, bareCeiling, baseline);
    await checkRows(rows);
    const allCells = cells(rows);
    watchdog(allCells.length, () => fs.rmSync(storage, { recursive: true, force: true }));
    const memBefore = memory(gatewayPid);
    await runRounds(allCells, pids);
    const memAfter = memory(gatewayPid);
    const results = withRatios(allCells.map(aggregate));
    report({ rows: results, wasm: wasmSizes(), memBefore, memAfter, host: machine() });
    return results.some((r) => r.errors > 0 || r.good === 0) ? 1 : 0;
  } finally {
    await ceiling.close();
    await bareCeiling.close();
    await gateway.close();
    await baseline?.close();
    fs.rmSync(storage, { recursive: true, force: true });
    if (baselineStorage) fs.rmSync(baselineStorage, { recursive: true, force: true });
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
