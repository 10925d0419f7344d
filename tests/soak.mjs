#!/usr/bin/env node
// `make soak`: several minutes of mixed load on the worker built by `make build-test`, under
// workerd, with its KV and Durable Object storage on disk; the runtime is stopped in the
// middle (requests in flight are cut) and started again on the same storage. Then, for every
// key, the invariants of the ledger are checked:
//   (a) its recorded spend equals the sum of usage x price over its spend-log rows (to 1e-9
//       USD, in fact exactly, in pico-dollars), and every call the client saw complete has its
//       row with exactly the usage the client saw;
//   (b) spend never passed max_budget (in every period, with budget_duration);
//   (c) no slot or budget hold is left behind (probes, see `probeKeys`);
//   (d) no 5xx other than those of the injected faults, and no hang.
// It prints a table of figures and exits 1 listing every violated invariant.
//
// Environment: SOAK_SECONDS (load, default 180), SOAK_WORKERS (concurrent clients, default
// 12), SOAK_MAX_REQUESTS (the load stops earlier after so many, default 50,000), SOAK_SEED
// (the plan of requests, default random), SOAK_SETTLE_SECONDS (wait after the load so that
// rate windows are empty before the probes, default 61), SOAK_WAIT_LEASES=1 (also wait until
// the leases of requests cut by the restart have ended, so that every slot must be free: adds
// up to 6 minutes).

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startGateway, MASTER_KEY } from './support/gateway.mjs';
import { positiveNumber, mulberry32 } from './support/knobs.mjs';

const SECONDS = positiveNumber('SOAK_SECONDS', 180);
const WORKERS = Math.round(positiveNumber('SOAK_WORKERS', 12));
// Also bounded in count: 10 keys x 5,000 stays under the 10,000 spend-log rows a ledger keeps.
const MAX_REQUESTS = Math.round(positiveNumber('SOAK_MAX_REQUESTS', 50_000));
const SEED = Math.round(positiveNumber('SOAK_SEED', 1 + Math.floor(Math.random() * 1e9)));
const SETTLE_SECONDS = positiveNumber('SOAK_SETTLE_SECONDS', 61);
const WAIT_LEASES = process.env.SOAK_WAIT_LEASES === '1';

// Far above any answer here (the slowest, an injected timeout, takes about 3 s): only a hang
// trips it, and a hang is a failure.
const REQUEST_TIMEOUT_MS = 30_000;
// README: a slot held by a request whose isolate died frees itself when its lease ends, at
// most 6 min (Databricks stops any model run after 297 s, plus a margin).
const LEASE_MS = 360_000;
// The default completion cap a budget imposes when the request sets no max_tokens (README).
const OUTPUT_CAP = 16_384n;
// What a budget may hold for a prompt, at most: the body's size in bytes (a token covers at
// least one byte of text) plus this many tokens, more than any chat template adds to a
// one-message request (a few hundred at most). The checks need a bound, not the formula.
const PROMPT_ALLOWANCE = 1024n;
// (a) is checked to 1e-9 USD; the gateway keeps exact pico-dollars, so any error is a bug.
const TOLERANCE_PICO = 1000n;
// Rows whose end_time is this close before a budget period's boundary may have been settled
// by the ledger after it (end_time is taken by the worker just before the settlement call).
const BOUNDARY_SLACK_MS = 3000;
// Rows per query of /spend/logs (its maximum), and per key (kept by the ledger, README).
const LOGS_PAGE = 1000;
const LOGS_KEPT = 10_000;
// A stream the client abandoned is settled once the gateway notices (its next chunk, here
// within a second); one abandoned this long before the restart may not have been.
const ABANDONED_SETTLE_MS = 5000;
const FAKE_OPTIONS = { record: false }; // nothing needs the bodies; a long run would keep them all

// ------------------------------------------------------------------------------ the keys

// Budgets are small and realistic for the test config's prices (databricks-gpt-5-1: 1.25e-6
// USD per input and 1e-5 per output token; a call here costs 1e-5 to 1e-3 USD), so the
// budgeted keys meet their budget during the run, and the periodic ones several times.
const KEY_SPECS = [
  { name: 'budget-small', fields: { max_budget: 0.05 } },
  { name: 'budget-period', fields: { max_budget: 0.04, budget_duration: '30s', soft_budget: 0.02 } },
  { name: 'budget-parallel', fields: { max_budget: 0.15, max_parallel_requests: 3 } },
  { name: 'rpm', fields: { rpm_limit: 90 } },
  { name: 'tpm', fields: { tpm_limit: 6000 } },
  { name: 'parallel', fields: { max_parallel_requests: 2 } },
  {
    name: 'model-rpm',
    fields: { model_rpm_limit: { 'databricks-gpt-5-1': 40, 'databricks-claude-sonnet-4-5': 15 } },
  },
  {
    // Every limit at once. tpm x the dearest output price exceeds the budget, so that the
    // hold probe (a request the budget cannot pay) is refused by the budget, not by tpm.
    name: 'everything',
    fields: {
      max_budget: 0.3,
      budget_duration: '45s',
      rpm_limit: 240,
      tpm_limit: 40_000,
      max_parallel_requests: 4,
      model_rpm_limit: { 'databricks-gpt-oss-120b': 60 },
    },
  },
  { name: 'free-a', fields: {} },
  { name: 'free-b', fields: {} },
];

// ------------------------------------------------------------------------------ the traffic

const CHAT_MODELS = [
  ['databricks-gpt-5-1', 55],
  ['databricks-claude-sonnet-4-5', 25],
  ['databricks-gpt-oss-120b', 20], // answers with reasoning tokens
];
const EMBEDDING_MODEL = 'databricks-gte-large-en';

// Kinds of request and their weights. A fault says how the fake misbehaves (its directives)
// and what the gateway must answer: `status`, or a 200 stream ending with an error event.
// slow-model has timeout and stream_timeout 1 s in tests/fixtures/litellm_config.yaml.
const KINDS = [
  ['chat', 30],
  ['stream', 22],
  ['stream-abort', 10],
  ['embed', 10],
  ['fault-500', 4],
  ['fault-503', 4],
  ['fault-429', 4],
  ['fault-reset', 3],
  ['fault-timeout', 3],
  ['fault-stall', 3],
  ['fault-broken', 5],
];
const FAULTS = {
  'fault-500': { status: 500, directive: () => '[fake:error=500]' },
  'fault-503': { status: 503, directive: () => '[fake:error=503]' },
  'fault-429': { status: 429, directive: () => '[fake:error=429]' },
  // The connection dropped before any answer: Databricks unreachable.
  'fault-reset': { status: 502, directive: () => '[fake:reset]' },
  // Slower than the deployment's timeout, on every retry.
  'fault-timeout': { status: 504, model: 'slow-model', directive: () => '[fake:delay=1300]' },
  // A stream that goes silent longer than stream_timeout after its first chunk.
  'fault-stall': {
    streamError: true,
    stream: true,
    model: 'slow-model',
    directive: () => '[fake:chunks=4] [fake:spacing=1300]',
  },
  // A stream broken mid-way: the connection lost, or a clean end without finish or [DONE].
  'fault-broken': {
    streamError: true,
    stream: true,
    directive: (rand) => (rand() < 0.5 ? '[fake:reset-mid]' : '[fake:truncate]'),
  },
};

/** One request to send: who, what, and what it must get. */
function planRequest(rand, keys) {
  const key = keys[Math.floor(rand() * keys.length)];
  const kind = weighted(rand, KINDS);
  const words = Array.from({ length: 3 + Math.floor(rand() * 38) }, () => `w${Math.floor(rand() * 1000)}`).join(' ');
  if (kind === 'embed') {
    const count = 1 + Math.floor(rand() * 3);
    const input = count === 1 ? words : Array.from({ length: count }, (_, i) => `${i} ${words}`);
    const body = { model: EMBEDDING_MODEL, input, encoding_format: rand() < 0.5 ? 'float' : 'base64' };
    return { key, kind, route: '/v1/embeddings', body, stream: false };
  }
  const fault = FAULTS[kind];
  const model = fault?.model ?? weighted(rand, CHAT_MODELS);
  const stream = fault?.stream ?? (kind === 'stream' || kind === 'stream-abort' || (fault ? rand() < 0.5 : false));
  let content = words;
  if (fault) content += ` ${fault.directive(rand)}`;
  else if (kind === 'stream-abort') content += ' [fake:chunks=12] [fake:spacing=25]';
  else if (stream) content += ` [fake:chunks=${1 + Math.floor(rand() * 8)}]${rand() < 0.3 ? ' [fake:spacing=10]' : ''}`;
  const body = { model, messages: [{ role: 'user', content }] };
  // Some without max_tokens: a budgeted key then gets one imposed.
  if (rand() < 0.7) body.max_tokens = 4 + Math.floor(rand() * 45);
  if (stream) {
    body.stream = true;
    body.stream_options = { include_usage: true };
  }
  // Some aborted before the answer starts, most mid-stream (12 chunks 25 ms apart).
  const abortAfterMs = kind === 'stream-abort' ? Math.floor(rand() * 350) : null;
  return { key, kind, route: '/v1/chat/completions', body, stream, fault, abortAfterMs };
}

// ------------------------------------------------------------------------------ one request

/**
 * Sends one planned request to the current runtime; returns what the client saw. Never
 * throws: a connection error, a client abort or a hang is recorded as `error`.
 */
async function execute(plan, state) {
  const rec = newRecord(plan);
  const work = send(plan, state, rec);
  // The client's own timeout aborts the request; this is the backstop should an abort not
  // settle it (then the request is abandoned, and counted as a hang).
  let backstop;
  const hung = new Promise((resolve) => {
    backstop = setTimeout(() => resolve('backstop'), REQUEST_TIMEOUT_MS + 5000);
  });
  state.active?.add(rec);
  const first = await Promise.race([work, hung]);
  clearTimeout(backstop);
  state.active?.delete(rec);
  if (first === 'backstop') {
    rec.error = 'hang';
    rec.errorMessage =
      `still ${rec.phase} ${REQUEST_TIMEOUT_MS + 5000} ms after it was sent (status ${rec.status}), ` +
      'its abort did not end it';
    rec.endedAt = Date.now();
  }
  return rec;
}

function newRecord(plan) {
  return {
    key: plan.key.name,
    kind: plan.kind,
    stream: plan.stream,
    group: plan.body.model,
    maxTokens: plan.body.max_tokens ?? null,
    bytes: 0,
    startedAt: Date.now(),
    endedAt: 0,
    status: 0,
    callId: null,
    deployment: null,
    costHeader: null,
    usage: null,
    done: false,
    streamError: null,
    errorType: null,
    errorMessage: null,
    error: null, // 'network' | 'client-abort' | 'hang'
    outcome: null,
    phase: 'sending',
  };
}

async function send(plan, state, rec) {
  const text = JSON.stringify(plan.body);
  rec.bytes = Buffer.byteLength(text);
  const controller = new AbortController();
  let why = null;
  const stop = (reason) => {
    why ??= reason;
    rec.phase += `, aborted (${reason})`;
    controller.abort();
  };
  const hang = setTimeout(() => stop('hang'), REQUEST_TIMEOUT_MS);
  const abort = plan.abortAfterMs == null ? null : setTimeout(() => stop('client-abort'), plan.abortAfterMs);
  try {
    const res = await fetch(`${state.gw.url}${plan.route}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${plan.key.secret}`, 'content-type': 'application/json' },
      body: text,
      signal: controller.signal,
    });
    rec.phase = 'reading';
    rec.status = res.status;
    rec.callId = res.headers.get('x-litellm-call-id');
    rec.deployment = res.headers.get('x-litellm-model-id');
    rec.costHeader = res.headers.get('x-litellm-response-cost');
    if (plan.stream && res.status === 200) await readStream(res, rec, controller.signal);
    else readAnswer(await readText(res, controller.signal), rec);
    // A cancelled reader ends quietly: the abort still decides what the request was.
    if (why) throw new Error(`aborted (${why})`);
  } catch (err) {
    rec.error = why ?? 'network';
    rec.errorMessage = `${err?.message ?? err}${err?.cause ? `: ${err.cause.message ?? err.cause}` : ''}`;
  } finally {
    clearTimeout(hang);
    if (abort) clearTimeout(abort);
    rec.endedAt = Date.now();
    rec.phase = `done (${why ?? 'read'})`;
  }
}

function readAnswer(text, rec) {
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    rec.errorMessage = `not JSON: ${text.slice(0, 120)}`;
    return;
  }
  if (json?.usage) rec.usage = json.usage;
  if (json?.error) {
    rec.errorType = json.error.type ?? null;
    rec.errorMessage = json.error.message ?? null;
  }
}

/**
 * Reads a body as text, piece by piece. Not `res.text()`: in Node 20 to 23 its promise stays
 * pending for good when the signal aborts while the body is being read (nodejs/node#56917;
 * seen here as hangs of streams the client abandoned); cancelling the reader ends it.
 */
async function readBody(res, signal, onText) {
  const reader = res.body.getReader();
  const cancel = () => reader.cancel().catch(() => {});
  if (signal.aborted) cancel();
  signal.addEventListener('abort', cancel, { once: true });
  const decoder = new TextDecoder();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    onText(decoder.decode(value, { stream: true }));
  }
  onText(decoder.decode());
}

async function readText(res, signal) {
  let text = '';
  await readBody(res, signal, (piece) => {
    text += piece;
  });
  return text;
}

/** Reads an SSE stream to its end: the last usage seen, an error event, `[DONE]`. */
async function readStream(res, rec, signal) {
  let buffer = '';
  await readBody(res, signal, (piece) => {
    buffer += piece;
    let end;
    while ((end = buffer.indexOf('\n\n')) !== -1) {
      streamEvent(buffer.slice(0, end), rec);
      buffer = buffer.slice(end + 2);
    }
  });
  if (buffer.trim()) streamEvent(buffer, rec);
}

function streamEvent(event, rec) {
  for (const line of event.split('\n')) {
    if (!line.startsWith('data:')) continue;
    const data = line.slice(5).trim();
    if (data === '[DONE]') {
      rec.done = true;
      continue;
    }
    let chunk;
    try {
      chunk = JSON.parse(data);
    } catch {
      rec.streamError ??= { message: `unparseable event: ${data.slice(0, 80)}` };
      continue;
    }
    // Usage may come on every chunk (cumulative) or once at the end: the last one counts.
    if (chunk.usage) rec.usage = chunk.usage;
    if (chunk.error) rec.streamError = chunk.error;
  }
}

// ------------------------------------------------------------------------------ outcomes

const LIMITER_429 = /^(Rate limit reached|Max parallel request limit reached)/;

/**
 * What a finished request counts as: `ok` (a complete answer), `limited` (the key's limits),
 * `budget` (its budget), `fault` (the injected fault answered as it must be), `aborted` (by
 * the client), `cut` (by the restart of the runtime), or `violation` with a reason.
 */
function classify(rec, plan, restart) {
  if (rec.error === 'hang') return violation(`no answer within ${REQUEST_TIMEOUT_MS / 1000} s (hang): ${rec.errorMessage}`);
  if (rec.error === 'client-abort') return plan.abortAfterMs !== null ? ['aborted'] : violation('aborted?');
  if (rec.error === 'network') {
    const duringRestart = restart && rec.startedAt <= restart.endedAt && rec.endedAt >= restart.beganAt;
    return duringRestart ? ['cut'] : violation(`connection error outside the restart: ${rec.errorMessage}`);
  }
  const fault = plan.fault;
  if (rec.status === 429 && LIMITER_429.test(rec.errorMessage ?? '')) return ['limited'];
  if (rec.status === 400 && rec.errorType === 'budget_exceeded') return ['budget'];
  if (fault?.status !== undefined && rec.status === fault.status) return ['fault'];
  if (rec.status !== 200) {
    const what = rec.status >= 500 ? 'unexpected 5xx' : 'unexpected status';
    return violation(`${what} ${rec.status} for ${plan.kind}: ${rec.errorType} ${rec.errorMessage}`);
  }
  if (fault?.status !== undefined) return violation(`${plan.kind} answered 200 instead of ${fault.status}`);
  if (!plan.stream) return rec.usage ? ['ok'] : violation('200 without usage');
  if (!rec.done) return violation(`stream without [DONE] (${plan.kind})`);
  if (fault?.streamError) {
    return rec.streamError ? ['fault'] : violation(`${plan.kind}: the broken stream ended without an error event`);
  }
  if (rec.streamError) return violation(`unexpected error event in a ${plan.kind}: ${rec.streamError.message}`);
  return rec.usage ? ['ok'] : violation('stream without usage (include_usage was asked)');
}

function violation(reason) {
  return ['violation', reason];
}

// ------------------------------------------------------------------------------ load

/**
 * Runs WORKERS clients until the deadline; stops and restarts the runtime in the middle.
 * Each client waits while the runtime restarts, so that only the requests in flight at the
 * stop are cut (a client hammering a dead port would only count refused connections).
 */
async function runLoad(state, keys, rand, violations) {
  const records = [];
  const startedAt = Date.now();
  const deadline = startedAt + SECONDS * 1000;
  const restartAt = startedAt + (SECONDS * 1000) / 2;
  let inFlight = 0;
  let sent = 0;
  const client = async () => {
    while (Date.now() < deadline && sent < MAX_REQUESTS) {
      while (state.restarting) await state.restarting;
      const plan = planRequest(rand, keys);
      sent += 1;
      inFlight += 1;
      const rec = await execute(plan, state);
      inFlight -= 1;
      rec.plan = plan;
      records.push(rec);
    }
  };
  const restarter = (async () => {
    await sleep(restartAt - Date.now());
    state.restart = { beganAt: Date.now(), inFlight, endedAt: Infinity };
    let resume;
    state.restarting = new Promise((r) => (resume = r));
    progress(`restart: stopping the runtime with ${inFlight} requests in flight`);
    const old = state.gw;
    await old.close(); // workerd is killed: what it was serving is cut mid-way
    state.gw = await startGateway({ persistDir: state.persistDir, fake: FAKE_OPTIONS });
    state.restart.endedAt = Date.now();
    progress(`restart: new runtime after ${state.restart.endedAt - state.restart.beganAt} ms at ${state.gw.url}`);
    state.restarting = null;
    resume();
  })();
  state.active = new Set();
  const ticker = setInterval(() => {
    progress(`load: ${records.length} requests, ${Math.round((Date.now() - startedAt) / 1000)} s, ${state.active.size} in flight`);
    // Past the deadline, say what is still going (the longest legitimate answer takes ~3 s).
    if (Date.now() > deadline + 5000) {
      for (const r of state.active) {
        progress(`  in flight: ${r.kind} ${r.key} ${r.phase} for ${Date.now() - r.startedAt} ms, status ${r.status}, call ${r.callId}`);
      }
    }
  }, 15_000);
  await Promise.all([...Array.from({ length: WORKERS }, client), restarter]);
  clearInterval(ticker);
  for (const rec of records) {
    const [outcome, reason] = classify(rec, rec.plan, state.restart);
    rec.outcome = outcome;
    if (reason) violations.push(`${rec.key}: ${reason} (call ${rec.callId ?? '-'})`);
  }
  return { records, startedAt, seconds: (Date.now() - startedAt) / 1000 };
}

// ------------------------------------------------------------------------------ gateway API

/** A JSON call to the gateway; any 5xx is a violation (admin routes have no injected faults). */
async function api(state, route, { method = 'GET', body, key = MASTER_KEY } = {}) {
  const res = await fetch(`${state.gw.url}${route}`, {
    method,
    headers: { authorization: `Bearer ${key}`, ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
    signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
  });
  const text = await res.text();
  if (res.status >= 500) state.violations.push(`${method} ${route}: ${res.status} ${text.slice(0, 200)}`);
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, json, text };
}

async function makeKeys(state) {
  const keys = [];
  for (const spec of KEY_SPECS) {
    const res = await api(state, '/key/generate', { method: 'POST', body: { key_alias: `soak-${spec.name}`, ...spec.fields } });
    if (res.status !== 200) throw new Error(`/key/generate ${spec.name}: ${res.status} ${res.text}`);
    const { max_budget: budget, budget_duration: period, max_parallel_requests: parallel, tpm_limit: tpm } = spec.fields;
    keys.push({
      name: spec.name,
      fields: spec.fields,
      secret: res.json.key,
      token: res.json.token,
      budgetPico: budget === undefined ? null : usdToPico(String(budget)),
      periodMs: period === undefined ? null : durationMs(period),
      parallel: parallel ?? null,
      tpm: tpm ?? null,
      // Keys with any limit are admitted and settled by their ledger before the answer ends;
      // the others are settled in the background after it.
      admitted: Object.keys(spec.fields).some((f) => f !== 'soft_budget'),
    });
  }
  return keys;
}

/** Prices per deployment id and the dearest per group, in pico-dollars, from /model/info. */
async function loadPrices(state) {
  const res = await api(state, '/model/info');
  if (res.status !== 200) throw new Error(`/model/info: ${res.status} ${res.text}`);
  const byId = new Map();
  const byGroup = new Map();
  for (const d of res.json.data) {
    const p = {
      input: usdToPico(String(d.model_info.input_cost_per_token ?? 0)),
      output: usdToPico(String(d.model_info.output_cost_per_token ?? 0)),
    };
    byId.set(d.model_info.id, p);
    const g = byGroup.get(d.model_name) ?? { input: 0n, output: 0n };
    byGroup.set(d.model_name, { input: max(g.input, p.input), output: max(g.output, p.output) });
  }
  return { byId, byGroup };
}

async function keyInfo(state, key) {
  const res = await api(state, `/key/info?key=${key.token}`);
  if (res.status !== 200) throw new Error(`/key/info ${key.name}: ${res.status} ${res.text}`);
  const info = res.json.info;
  return {
    spendPico: usdToPico(numberText(info.spend)),
    resetAt: info.budget_reset_at ? Date.parse(info.budget_reset_at) : null,
  };
}

/** Every spend-log row of a key, paging back in time (rows come newest first). */
async function spendLogs(state, key) {
  const rows = new Map();
  let end = null;
  for (;;) {
    const query = `api_key=${key.token}&limit=${LOGS_PAGE}${end === null ? '' : `&end_date=${new Date(end).toISOString()}`}`;
    const res = await api(state, `/spend/logs?${query}`);
    if (res.status !== 200) throw new Error(`/spend/logs ${key.name}: ${res.status} ${res.text}`);
    const before = rows.size;
    for (const row of res.json) rows.set(row.call_id, row);
    if (res.json.length < LOGS_PAGE || rows.size === before) break;
    // The page's oldest millisecond again (end_date is inclusive): its rows are deduplicated.
    end = Math.min(...res.json.map((r) => Date.parse(r.startTime)));
  }
  return rows;
}

/** Waits until no key's row count changes for two polls: background settlements are done. */
async function waitForSettlements(state, keys) {
  let last = '';
  for (let i = 0; i < 30; i++) {
    const counts = [];
    for (const key of keys) counts.push((await spendLogs(state, key)).size);
    const now = counts.join(',');
    if (now === last) return;
    last = now;
    await sleep(1000);
  }
  state.violations.push('spend-log rows still changing 30 s after the load stopped');
}

// ------------------------------------------------------------------------------ checks

/**
 * (a) and (b) for one key, from its rows and /key/info. `calls` are the client's records of
 * this key (load and probes). Returns figures for the table.
 */
function checkLedger(key, rows, info, calls, prices, state, phase) {
  const v = (text) => state.violations.push(`${phase} ${key.name}: ${text}`);
  let maxErr = 0n;
  // Every row: spend = prompt x input price + completion x output price of its deployment.
  for (const row of rows.values()) {
    const spend = usdToPico(numberText(row.spend));
    const p = prices.byId.get(row.model_id);
    if (!p) {
      if (spend !== 0n) v(`row ${row.call_id} charged ${row.spend} on an unknown deployment '${row.model_id}'`);
      continue;
    }
    const expected = BigInt(row.prompt_tokens) * p.input + BigInt(row.completion_tokens) * p.output;
    const err = abs(spend - expected);
    maxErr = max(maxErr, err);
    if (err > TOLERANCE_PICO) v(`row ${row.call_id} spend ${row.spend} != usage x price ${picoToUsd(expected)}`);
  }
  // Every call the client saw complete has its row, with exactly the client's usage.
  let lostAtRestart = 0;
  let matched = 0;
  for (const rec of calls) {
    if (rec.outcome !== 'ok') continue;
    const row = rows.get(rec.callId);
    const prompt = rec.usage.prompt_tokens;
    const completion = rec.usage.completion_tokens ?? 0;
    if (!row) {
      // A key without limits is settled in the background after its answer: a runtime
      // stopped right after an answer takes that settlement with it.
      const r = state.restart;
      if (!key.admitted && r && rec.endedAt >= r.beganAt - 5000 && rec.endedAt <= r.endedAt) lostAtRestart += 1;
      else v(`complete call ${rec.callId} (${rec.kind}) has no spend-log row`);
      continue;
    }
    if (row.prompt_tokens !== prompt || row.completion_tokens !== completion) {
      v(`call ${rec.callId}: row usage ${row.prompt_tokens}+${row.completion_tokens}, client saw ${prompt}+${completion}`);
    }
    matched += 1;
    if (row.stream !== rec.stream) v(`call ${rec.callId}: row stream=${row.stream}, client stream=${rec.stream}`);
    // A plain answer states its cost: it must be the same exact figure.
    if (rec.costHeader !== null && !rec.stream) {
      const p = prices.byId.get(rec.deployment);
      const expected = p ? BigInt(prompt) * p.input + BigInt(completion) * p.output : 0n;
      if (usdToPico(rec.costHeader) !== expected) {
        v(`call ${rec.callId}: x-litellm-response-cost ${rec.costHeader} != ${picoToUsd(expected)}`);
      }
    }
  }
  if (rows.size >= LOGS_KEPT) v(`${rows.size} rows: the ledger keeps ${LOGS_KEPT}, the sums below cannot be exact (run shorter)`);

  // The key's spend is the sum of its rows (of the current period, with budget_duration).
  const ended = [...rows.values()].map((row) => ({ end: Date.parse(row.endTime), spend: usdToPico(numberText(row.spend)) }));
  let spendErr;
  const periods = [];
  if (key.periodMs === null) {
    const sum = ended.reduce((s, r) => s + r.spend, 0n);
    spendErr = abs(sum - info.spendPico);
    periods.push(sum);
  } else {
    spendErr = periodSpendError(key, ended, info);
    for (const [, sum] of periodSums(key, ended, info)) periods.push(sum);
  }
  maxErr = max(maxErr, spendErr);
  if (spendErr > TOLERANCE_PICO) v(`/key/info spend ${picoToUsd(info.spendPico)} differs from its rows by ${picoToUsd(spendErr)} USD`);

  // (b) Never over budget: in total, or in each period.
  if (phase === 'A' && key.budgetPico !== null) {
    if (info.spendPico > key.budgetPico) v(`spend ${picoToUsd(info.spendPico)} > max_budget ${picoToUsd(key.budgetPico)}`);
    periods.forEach((sum, i) => {
      if (sum > key.budgetPico) v(`period ${i}: rows sum to ${picoToUsd(sum)} > max_budget ${picoToUsd(key.budgetPico)}`);
    });
  }
  const estimated = [...rows.values()].filter((row) => row.estimated).length;
  return { rowIds: new Set(rows.keys()), maxErr, rows: rows.size, matched, estimated, lostAtRestart, periods: periods.length };
}

/** Rows' spend per budget period (by end time), the current period last. */
function periodSums(key, ended, info) {
  if (info.resetAt === null) return [[0, ended.reduce((s, r) => s + r.spend, 0n)]];
  const currentStart = info.resetAt - key.periodMs;
  const sums = new Map();
  for (const r of ended) {
    const index = Math.floor((r.end - currentStart) / key.periodMs);
    sums.set(index, (sums.get(index) ?? 0n) + r.spend);
  }
  return [...sums.entries()].sort((a, b) => a[0] - b[0]);
}

/**
 * The distance between /key/info's spend (this period) and the rows of this period. A row
 * that ended just before the period began may have been settled just after: the smallest
 * distance over those rows counted in or out.
 */
function periodSpendError(key, ended, info) {
  if (info.resetAt === null) return abs(info.spendPico - ended.reduce((s, r) => s + r.spend, 0n));
  const currentStart = info.resetAt - key.periodMs;
  const sure = ended.filter((r) => r.end >= currentStart).reduce((s, r) => s + r.spend, 0n);
  const unsure = ended.filter((r) => r.end < currentStart && r.end >= currentStart - BOUNDARY_SLACK_MS).map((r) => r.spend);
  let best = abs(info.spendPico - sure);
  if (unsure.length > 16) return best; // never seen; the exact search would be too long
  for (let mask = 1; mask < 1 << unsure.length; mask++) {
    let sum = sure;
    unsure.forEach((s, i) => {
      if (mask & (1 << i)) sum += s;
    });
    best = min(best, abs(info.spendPico - sum));
  }
  return best;
}

// ------------------------------------------------------------------------------ probes

/**
 * (c) No hold and no slot left, probed through the API (nothing in the product exposes
 * holds), after the rate windows have emptied:
 * - hold: a request the budget cannot pay is refused with "Current cost: X", X being spend
 *   plus what admitted requests may still cost; X must equal /key/info's spend. Then a
 *   request whose worst case fits what is left (its prompt counted as its size in bytes plus
 *   PROMPT_ALLOWANCE tokens, an upper bound of what a budget holds for it) must be admitted.
 * - tpm: a request reserving (almost) the whole tokens-per-minute limit must be admitted.
 * - slots: N requests held open by the fake are all admitted, and one more is refused.
 * The one exception is the restart. A request the runtime was serving when it stopped was
 * never settled: its hold stays until its reservation is charged (after 1 h, by design) and
 * its slot until its lease ends (<= 6 min). Those are the requests cut by the restart, and the
 * streams the client had abandoned just before it (the gateway settles an abandoned stream
 * when it notices, which the stop may have prevented), that have no spend-log row. Keys with
 * such requests may show their holds and slots, bounded by what those could hold; nothing else.
 */
async function probeKeys(state, keys, records, prices, ledger) {
  const results = new Map();
  for (const key of keys) {
    const cut = unsettledAtRestart(state, records, key, ledger.get(key.name).rowIds);
    const result = { cut: cut.length, hold: null, slots: null, tpm: null };
    results.set(key.name, result);
    if (key.budgetPico !== null) result.hold = await probeHold(state, key, cut, prices);
    if ((key.tpm !== null || key.parallel !== null) && key.budgetPico !== null) {
      // The budget was checked above; give room so that only the slot or tpm limit decides.
      const raised = Number(picoToUsd(key.budgetPico)) + 5;
      const res = await api(state, '/key/update', { method: 'POST', body: { key: key.token, max_budget: raised } });
      if (res.status !== 200) state.violations.push(`probe ${key.name}: /key/update ${res.status} ${res.text}`);
    }
    if (key.tpm !== null) result.tpm = await probeTpm(state, key);
    if (key.parallel !== null) result.slots = await probeSlots(state, key, cut);
  }
  return results;
}

/** The requests of `key` that the restart may have left unsettled (see `probeKeys`). */
function unsettledAtRestart(state, records, key, rowIds) {
  const r = state.restart;
  const abandonedBefore = (rec) => rec.endedAt >= r.beganAt - ABANDONED_SETTLE_MS && rec.endedAt <= r.endedAt;
  return records.filter(
    (rec) =>
      rec.key === key.name &&
      (rec.outcome === 'cut' || (rec.outcome === 'aborted' && abandonedBefore(rec))) &&
      !(rec.callId && rowIds.has(rec.callId)),
  );
}

const PROBE_MODEL = 'databricks-claude-sonnet-4-5'; // the dearest output here: the strictest budget test
const CHEAP_MODEL = 'databricks-gpt-oss-120b';

function probeBody(model, content, max_tokens) {
  return { model, messages: [{ role: 'user', content }], max_tokens };
}

async function probeHold(state, key, cut, prices) {
  const v = (text) => state.violations.push(`probe ${key.name}: ${text}`);
  const p = prices.byGroup.get(PROBE_MODEL);
  // Enough output tokens that the budget cannot pay them; within tpm so that tpm does not
  // refuse first.
  const tooMuch = key.tpm !== null ? key.tpm - 500 : 10_000_000;
  let committed = null;
  let spend = null;
  for (let attempt = 0; attempt < 3 && committed === null; attempt++) {
    const before = await keyInfo(state, key);
    const res = await probeCall(state, key, probeBody(PROBE_MODEL, 'hold probe', tooMuch), 'probe-hold');
    const after = await keyInfo(state, key);
    // A budget period that ended in between changes the spend: try again.
    if (before.spendPico !== after.spendPico) continue;
    spend = after.spendPico;
    const m = /Current cost: ([\d.]+)/.exec(res.errorMessage ?? '');
    if (res.status !== 400 || res.errorType !== 'budget_exceeded' || !m) {
      v(`a request the budget cannot pay got ${res.status} ${res.errorMessage}`);
      return { hold: null, bound: null };
    }
    committed = usdToPico(m[1]);
  }
  if (committed === null) {
    v('spend kept changing during the hold probe');
    return { hold: null, bound: null };
  }
  const hold = committed - spend;
  // What the requests unsettled at the restart could hold at most (their worst case).
  const bound = cut.reduce((sum, r) => {
    const g = prices.byGroup.get(r.group) ?? { input: 0n, output: 0n };
    const output = r.maxTokens === null ? OUTPUT_CAP : BigInt(r.maxTokens);
    return sum + min(key.budgetPico, (BigInt(r.bytes) + PROMPT_ALLOWANCE) * g.input + output * g.output);
  }, 0n);
  if (hold < 0n) v(`committed ${picoToUsd(committed)} < spend ${picoToUsd(spend)}`);
  if (hold > bound) {
    v(`budget hold ${picoToUsd(hold)} USD left with ${cut.length} requests unsettled at the restart (at most ${picoToUsd(bound)})`);
  }
  if (committed > key.budgetPico) v(`committed ${picoToUsd(committed)} > max_budget ${picoToUsd(key.budgetPico)}`);

  // The converse: what is left really is available. max_tokens such that
  // (bytes + allowance) x input + max_tokens x output <= budget - committed.
  const left = key.budgetPico - committed;
  const body = probeBody(PROBE_MODEL, 'fits probe', 1);
  const bytes = BigInt(Buffer.byteLength(JSON.stringify({ ...body, max_tokens: 999_999 })));
  let fits = (left - (bytes + PROMPT_ALLOWANCE) * p.input) / p.output;
  if (key.tpm !== null) fits = min(fits, BigInt(key.tpm) - bytes - 1n);
  if (fits >= 1n) {
    body.max_tokens = Number(fits);
    const res = await probeCall(state, key, body, 'probe-fits');
    if (res.status !== 200) v(`a request whose worst case fits the ${picoToUsd(left)} USD left got ${res.status} ${res.errorMessage}`);
  }
  return { hold, bound, fits: fits >= 1n ? Number(fits) : 0 };
}

async function probeTpm(state, key) {
  const body = probeBody(CHEAP_MODEL, 'tpm probe', 1);
  const bytes = Buffer.byteLength(JSON.stringify({ ...body, max_tokens: 999_999 }));
  // The window holds only the probes answered before this one (the load ended more than 60 s
  // ago), each counted with its real usage once settled.
  const used = state.probes
    .filter((r) => r.key === key.name && r.outcome === 'ok')
    .reduce((s, r) => s + r.usage.prompt_tokens + (r.usage.completion_tokens ?? 0), 0);
  body.max_tokens = key.tpm - used - bytes - 1;
  const res = await probeCall(state, key, body, 'probe-tpm');
  if (res.status !== 200) {
    state.violations.push(`probe ${key.name}: a request reserving ${key.tpm - 1} of tpm ${key.tpm} got ${res.status} ${res.errorMessage}`);
  }
  return res.status === 200;
}

async function probeSlots(state, key, cut) {
  const n = key.parallel;
  const held = (i) => probeCall(state, key, probeBody('databricks-gpt-5-1', `slot ${i} [fake:delay=2000]`, 4), 'probe-slot');
  const first = Array.from({ length: n }, (_, i) => held(i));
  await sleep(700); // admitted by then: each admission is one Durable Object call
  const extra = await probeCall(state, key, probeBody('databricks-gpt-5-1', 'one too many', 4), 'probe-slot');
  const results = await Promise.all(first);
  const admitted = results.filter((r) => r.status === 200).length;
  const refused = [...results, extra].filter((r) => r.status === 429 && /parallel/i.test(r.errorMessage ?? ''));
  // Cut requests whose lease may still run hold a slot each; any other missing slot leaked.
  const since = Date.now() - (state.restart?.beganAt ?? Date.now());
  const leased = since < LEASE_MS ? cut.length : 0;
  const v = (text) => state.violations.push(`probe ${key.name}: ${text}`);
  if (admitted < n - leased) {
    v(`max_parallel_requests ${n}: only ${admitted} admitted (${leased} may be held by requests unsettled at the restart)`);
  }
  if (admitted + refused.length !== n + 1) {
    const others = [...results, extra].filter((r) => r.status !== 200 && !refused.includes(r)).map((r) => `${r.status} ${r.errorMessage}`);
    v(`slot probe: ${admitted} admitted, ${refused.length} refused for parallel, others: ${others.join('; ')}`);
  }
  if (extra.status === 200) v(`max_parallel_requests ${n}: a request past the limit was admitted`);
  return { n, admitted, leased };
}

/** A probe request, recorded like the load's (its row is checked in phase C). */
async function probeCall(state, key, body, kind) {
  const plan = { key, kind, route: '/v1/chat/completions', body, stream: false, abortAfterMs: null };
  const rec = await execute(plan, state);
  rec.plan = plan;
  rec.outcome = rec.status === 200 && rec.usage ? 'ok' : 'probe-refused';
  if (rec.error) state.violations.push(`probe ${key.name}: ${rec.error} ${rec.errorMessage}`);
  if (rec.status >= 500) state.violations.push(`probe ${key.name}: ${rec.status} ${rec.errorMessage}`);
  state.probes.push(rec);
  return rec;
}

// ------------------------------------------------------------------------------ report

function report({ state, keys, load, ledgerA, ledgerC, probes, totalSeconds }) {
  const { records } = load;
  const outcomes = ['ok', 'limited', 'budget', 'fault', 'aborted', 'cut', 'violation'];
  const lines = [];
  const row = (cells, widths) => cells.map((c, i) => (i === 0 ? String(c).padEnd(widths[i]) : String(c).padStart(widths[i]))).join(' ');
  const widths = [14, 7, ...outcomes.map(() => 9)];
  lines.push(row(['kind', 'sent', ...outcomes], widths));
  const kinds = [...KINDS.map(([k]) => k), 'total'];
  for (const kind of kinds) {
    const of = kind === 'total' ? records : records.filter((r) => r.kind === kind);
    lines.push(row([kind, of.length, ...outcomes.map((o) => of.filter((r) => r.outcome === o).length)], widths));
  }
  lines.push('');
  const kw = [16, 7, 7, 11, 11, 8, 13, 10, 14];
  lines.push(row(['key', 'calls', 'rows', 'spend USD', 'budget USD', 'periods', 'hold USD', 'unsettled', 'slots free/N'], kw));
  for (const key of keys) {
    const a = ledgerA.get(key.name);
    const p = probes.get(key.name);
    const calls = records.filter((r) => r.key === key.name).length;
    const hold = p.hold?.hold === null || p.hold?.hold === undefined ? '-' : picoToUsd(p.hold.hold);
    const slots = p.slots ? `${p.slots.admitted}/${p.slots.n}` : '-';
    const budget = key.budgetPico === null ? '-' : picoToUsd(key.budgetPico);
    lines.push(row([key.name, calls, a.rows, picoToUsd(a.spend), budget, key.periodMs ? a.periods : '-', hold, p.cut, slots], kw));
  }
  const maxErr = [...ledgerA.values(), ...ledgerC.values()].reduce((m, r) => max(m, r.maxErr), 0n);
  const total = (figures, field) => [...figures.values()].reduce((s, r) => s + r[field], 0);
  const lost = total(ledgerA, 'lostAtRestart');
  const r = state.restart;
  lines.push('');
  const count = (outcome) => records.filter((x) => x.outcome === outcome).length;
  const rate = (records.length / load.seconds).toFixed(1);
  lines.push(`load ${load.seconds.toFixed(0)} s, ${WORKERS} clients, seed ${SEED}: ${records.length} requests, ${rate} req/s`);
  lines.push(`client disconnects (streams aborted): ${count('aborted')}; injected faults: ${records.filter((x) => x.plan.fault).length}`);
  const at = ((r.beganAt - load.startedAt) / 1000).toFixed(0);
  lines.push(`restarts: 1 (at ${at} s, ${r.inFlight} in flight, ${count('cut')} cut, new runtime in ${r.endedAt - r.beganAt} ms)`);
  const probed = [...probes.values()];
  const held = probed.reduce((sum, p) => sum + (p.hold?.hold ?? 0n), 0n);
  const allowed = probed.reduce((sum, p) => sum + (p.hold?.bound ?? 0n), 0n);
  const leased = probed.reduce((sum, p) => sum + (p.slots ? p.slots.n - p.slots.admitted : 0), 0);
  const unsettled = probed.reduce((n, p) => n + p.cut, 0);
  lines.push(
    `left by requests unsettled at the restart (${unsettled}): budget holds ${picoToUsd(held)} USD ` +
      `(allowed ${picoToUsd(allowed)}), slots ${leased}`,
  );
  lines.push(`answered calls without a row (settled in the background, lost with the stopped runtime): ${lost}`);
  lines.push(
    `spend-log rows checked: ${total(ledgerC, 'rows')} (${total(ledgerC, 'estimated')} charged by estimate); ` +
      `complete calls matched to their row: ${total(ledgerC, 'matched')}`,
  );
  lines.push(`keys checked: ${keys.length}; probe calls: ${state.probes.length}; max spend error: ${picoToUsd(maxErr)} USD`);
  lines.push(`total ${totalSeconds.toFixed(0)} s (load, settling, waiting for the rate windows${WAIT_LEASES ? ' and leases' : ''}, probes)`);
  return lines.join('\n');
}

// ------------------------------------------------------------------------------ main

async function readLedgers(state, keys, calls, prices, phase) {
  const figures = new Map();
  for (const key of keys) {
    const rows = await spendLogs(state, key);
    const info = await keyInfo(state, key);
    const result = checkLedger(key, rows, info, calls.filter((r) => r.key === key.name), prices, state, phase);
    figures.set(key.name, { ...result, spend: info.spendPico });
  }
  return figures;
}

async function main() {
  const began = Date.now();
  const persistDir = mkdtempSync(path.join(tmpdir(), 'gateway-soak-'));
  const rand = mulberry32(SEED);
  const state = { gw: null, persistDir, restarting: null, restart: null, violations: [], probes: [] };
  progress(`seed ${SEED}, ${SECONDS} s of load, ${WORKERS} clients, storage in ${persistDir}`);
  state.gw = await startGateway({ persistDir, fake: FAKE_OPTIONS });
  try {
    const prices = await loadPrices(state);
    const keys = await makeKeys(state);
    const load = await runLoad(state, keys, rand, state.violations);
    progress(`load done: ${load.records.length} requests; waiting for background settlements`);
    await waitForSettlements(state, keys);

    // Phase A: the ledgers as the load left them.
    const ledgerA = await readLedgers(state, keys, load.records, prices, 'A');

    const leasesEnd = WAIT_LEASES && state.restart ? state.restart.beganAt + LEASE_MS + 5000 : 0;
    const waitUntil = Math.max(Date.now() + SETTLE_SECONDS * 1000, leasesEnd);
    const what = WAIT_LEASES ? 'the rate windows and the leases of cut requests' : 'the rate windows';
    progress(`waiting ${Math.round((waitUntil - Date.now()) / 1000)} s for ${what} to end`);
    await sleep(waitUntil - Date.now());
    const probes = await probeKeys(state, keys, load.records, prices, ledgerA);

    // Phase C: the same invariants with the probes' calls included.
    const ledgerC = await readLedgers(state, keys, [...load.records, ...state.probes], prices, 'C');

    console.log(`\n${report({ state, keys, load, ledgerA, ledgerC, probes, totalSeconds: (Date.now() - began) / 1000 })}`);
  } finally {
    await state.gw.close();
    rmSync(persistDir, { recursive: true, force: true });
  }
  if (state.violations.length > 0) {
    console.log(`\n${state.violations.length} VIOLATIONS:`);
    for (const line of state.violations.slice(0, 200)) console.log(`  ${line}`);
    if (state.violations.length > 200) console.log(`  ... and ${state.violations.length - 200} more`);
    process.exitCode = 1;
  } else {
    console.log('\nall invariants hold');
  }
}

// ------------------------------------------------------------------------------ helpers

/** Exact decimal USD text ("0.00005499991", "1e-7") to pico-dollars. */
function usdToPico(text) {
  const s = numberText(text);
  const [whole, frac = ''] = s.split('.');
  if (frac.length > 12 && /[1-9]/.test(frac.slice(12))) throw new Error(`more precise than a pico-dollar: ${text}`);
  return BigInt(whole || '0') * 1_000_000_000_000n + BigInt((frac + '000000000000').slice(0, 12));
}

/** A number as plain decimal text (no exponent), exact for what the gateway sends. */
function numberText(value) {
  if (typeof value === 'string' && !/e/i.test(value)) return value;
  const n = Number(value);
  // Pico-dollar amounts from the gateway are p / 1e12 as f64: rounding back is exact.
  const pico = BigInt(Math.round(n * 1e12));
  const whole = pico / 1_000_000_000_000n;
  const frac = (pico % 1_000_000_000_000n).toString().padStart(12, '0');
  return `${whole}.${frac}`;
}

function picoToUsd(pico) {
  const sign = pico < 0n ? '-' : '';
  const a = abs(pico);
  const frac = (a % 1_000_000_000_000n).toString().padStart(12, '0').replace(/0+$/, '');
  return `${sign}${a / 1_000_000_000_000n}.${frac || '0'}`;
}

function durationMs(text) {
  const m = /^(\d+)([smhdw])$/.exec(text);
  if (!m) throw new Error(`soak: unsupported budget_duration '${text}'`);
  return Number(m[1]) * { s: 1e3, m: 6e4, h: 3.6e6, d: 8.64e7, w: 6.048e8 }[m[2]];
}

const abs = (x) => (x < 0n ? -x : x);
const max = (a, b) => (a > b ? a : b);
const min = (a, b) => (a < b ? a : b);
const sleep = (ms) => new Promise((r) => setTimeout(r, Math.max(0, ms)));

function weighted(rand, table) {
  const total = table.reduce((s, [, w]) => s + w, 0);
  let x = rand() * total;
  for (const [value, w] of table) {
    x -= w;
    if (x < 0) return value;
  }
  return table.at(-1)[0];
}

function progress(text) {
  process.stderr.write(`[soak ${new Date().toISOString().slice(11, 19)}] ${text}\n`);
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 2;
});
