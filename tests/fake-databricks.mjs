#!/usr/bin/env node
// A local fake of Databricks Model Serving, for the end-to-end tests (imported in-process)
// and for `make dev` (run as a CLI). Wire shapes, statuses and error bodies follow
// Databricks' documented behaviour; `response_format` (json_object, json_schema) is answered
// with JSON that matches it. Claude endpoints also answer Anthropic's Messages API at
// /serving-endpoints/anthropic/v1/messages (see "anthropic messages" below); both routes
// account for Claude's prompt cache (content parts that carry cache_control). Tests steer it
// with `[fake:KEY=VALUE]` directives in the last user text (see DIRECTIVES), or per endpoint
// with `override()`. With `oauth` it also
// issues OAuth machine-to-machine tokens at /oidc/v1/token. Zero dependencies; no logging or
// sync I/O per request, so it is never the bottleneck of a benchmark.

import http from 'node:http';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { pathToFileURL } from 'node:url';

const BASE = '/serving-endpoints';
// At the workspace root, not under BASE.
const TOKEN_PATH = '/oidc/v1/token';
const PATH_HELP =
  'Path must be of form /serving-endpoints/<endpoint_name>/invocations or ' +
  '/serving-endpoints/<endpoint_name>/served-models/<served_model_name>/invocations';
const EMBEDDING_DIMS = 1024;
// The value of every string a tool call's arguments hold (so the weather tool gets {"city":"Paris"}).
const TOOL_STRING = 'Paris';
// Fields the LiteLLM SDK attaches to messages; Databricks refuses unknown fields.
const LITELLM_MESSAGE_FIELDS = ['provider_specific_fields', 'reasoning_items', 'reasoning_content', 'thinking_blocks'];
const DEFAULT_CHUNKS = 3;
const SPLIT_PAUSE_MS = 5;
const MALFORMED_BODY = '{"id": "chatcmpl_x", "choices": [';
const MALFORMED_EVENT = '{"oops": ';

// Every directive the fake understands, with the kind of value it takes. Anything else is
// rejected with a 400 so that a typo in a test fails loudly instead of being ignored.
const DIRECTIVES = {
  error: 'status',
  'error-body': 'body-kind',
  'retry-after': 'int',
  'echo-token': 'flag',
  delay: 'int',
  chunks: 'positive',
  spacing: 'int',
  truncate: 'flag',
  malformed: 'flag',
  reset: 'flag',
  'reset-mid': 'flag',
  'no-done': 'flag',
  'empty-choices': 'flag',
  reasoning: 'flag',
  reply: 'word',
  'sse-crlf': 'flag',
  'sse-split': 'flag',
  tool: 'flag',
  // Claude's context-length refusal, whose message is itself a JSON string (databricks.md).
  'too-long': 'flag',
  // Where a stream carries usage: every chunk, cumulative (Databricks' pay-per-token default),
  // one usage-only chunk at the end, or none at all.
  usage: 'usage-mode',
  // Two tool calls in one answer (with [fake:tool]), streamed interleaved.
  'parallel-tools': 'flag',
  // The stream breaks with an error event after a couple of content chunks.
  'error-mid': 'flag',
  // A redacted (encrypted) thinking part after the readable one (with reasoning).
  redacted: 'flag',
};
// On the Messages route, `[fake:error-body=databricks]` answers a directed error in Databricks'
// shape instead of Anthropic's (databricks.md: which one that route uses is uncertain).
const DIRECTIVE_RE = /\[fake:([A-Za-z][\w-]*)(?:=([^\]\s]*))?\]/g;
const NO_DIRECTIVES = Object.freeze({});

const noop = () => {};

// ------------------------------------------------------------------------------ server

/**
 * Starts the fake. Resolves once it listens.
 * `oauth: {clientId, clientSecret, expiresIn = 3600}` enables POST /oidc/v1/token; serving
 * routes then take its access tokens as well as the PAT `token`.
 * Per-endpoint objects map an endpoint name to a count; an endpoint with no request in flight
 * is absent from `inFlightByEndpoint`.
 * @returns {Promise<{url: string, workspaceUrl: string, port: number, requests: object[],
 *   readonly inFlight: number, readonly maxInFlight: number, readonly abortedCount: number,
 *   readonly inFlightByEndpoint: object, readonly maxInFlightByEndpoint: object,
 *   readonly countsByEndpoint: object, readonly tokensIssued: number,
 *   override(endpoint: string, directives: string | null): void, expireTokens(): void, revokeTokens(): void,
 *   reset(): void, close(): Promise<void>}>}
 */
export async function startFakeDatabricks({
  port = 0,
  host = '127.0.0.1',
  token = 'dapi-fake-token',
  servedSuffix = '-served',
  record = true,
  oauth = null,
  strict = true,
} = {}) {
  const state = {
    token, servedSuffix, record, strict, requests: [], inFlight: 0, maxInFlight: 0, abortedCount: 0,
    oauth: oauth ? oauthState(oauth) : null,
    overrides: new Map(), // endpoint -> raw directives, as parseDirectives finds them
    promptCache: new Map(), // Messages route: cached prefix digest -> expiry (ms since epoch)
    inFlightBy: new Map(), maxInFlightBy: new Map(), countsBy: new Map(),
  };
  const server = http.createServer((req, res) => {
    handle(state, req, res);
  });
  // Longer than any client's idle keep-alive, so a reused socket is never closed under it.
  server.keepAliveTimeout = 65_000;
  server.headersTimeout = 66_000;

  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });

  const actualPort = server.address().port;
  const urlHost = host.includes(':') ? `[${host}]` : host;
  let closing = null;
  const workspaceUrl = `http://${urlHost}:${actualPort}`;
  return {
    url: `${workspaceUrl}${BASE}`,
    workspaceUrl,
    port: actualPort,
    requests: state.requests,
    get inFlight() {
      return state.inFlight;
    },
    get maxInFlight() {
      return state.maxInFlight;
    },
    get abortedCount() {
      return state.abortedCount;
    },
    get inFlightByEndpoint() {
      return Object.fromEntries(state.inFlightBy);
    },
    get maxInFlightByEndpoint() {
      return Object.fromEntries(state.maxInFlightBy);
    },
    get countsByEndpoint() {
      return Object.fromEntries(state.countsBy);
    },
    get tokensIssued() {
      return state.oauth?.issued ?? 0;
    },
    // Every later request to `endpoint` acts as if `directives` were in its prompt too (the
    // prompt's own win on conflict). null removes it. Throws at once on a bad directive.
    override(endpoint, directives) {
      if (typeof endpoint !== 'string' || endpoint === '') throw new TypeError('override: endpoint must be a non-empty string');
      const found = directives == null ? null : overrideDirectives(directives);
      if (found && found.size > 0) state.overrides.set(endpoint, found);
      else state.overrides.delete(endpoint);
    },
    // Strict (the default): refuses what Databricks refuses. A test that needs leniency says so.
    setStrict(on) {
      state.strict = Boolean(on);
    },
    // Tokens issued so far are no longer known: Databricks answers 403 "Invalid access token."
    // (a token revoked or rotated before its expiry).
    revokeTokens() {
      state.oauth?.tokens.clear();
    },
    // Tokens issued so far now answer "expired", as a real one does after `expires_in`.
    expireTokens() {
      if (!state.oauth) return;
      for (const issued of state.oauth.tokens.keys()) state.oauth.tokens.set(issued, 0);
    },
    reset() {
      // Same array object: tests may hold a reference to `requests`.
      state.requests.length = 0;
      state.maxInFlight = state.inFlight;
      state.abortedCount = 0;
      state.overrides.clear();
      state.responsesCache?.clear();
      state.countsBy.clear();
      state.maxInFlightBy = new Map(state.inFlightBy);
      state.promptCache.clear();
      // Issued tokens stay valid: a gateway caching one must not fail across tests.
      if (state.oauth) state.oauth.issued = 0;
    },
    close() {
      closing ??= new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      return closing;
    },
  };
}

async function handle(state, req, res) {
  const receivedAt = performance.now();
  // Writes racing a client hang-up must never surface as unhandled errors.
  req.on('error', noop);
  res.on('error', noop);
  const rawBody = await readBody(req);
  if (rawBody === null || res.destroyed || req.socket.destroyed) return;
  const path = req.url.split('?', 1)[0];
  // Token requests are not serving traffic: kept out of `requests` and the in-flight counts.
  if (state.oauth && path === TOKEN_PATH && req.method === 'POST') return issueToken(state, req, res, rawBody);
  const ex = openExchange(state, req, res, rawBody, path, receivedAt);
  try {
    await respond(ex);
  } catch (err) {
    failUnexpectedly(ex, err);
  }
}

async function readBody(req) {
  const parts = [];
  try {
    for await (const part of req) parts.push(part);
  } catch {
    return null; // the client went away while sending
  }
  return parts.length === 1 ? parts[0].toString('utf8') : Buffer.concat(parts).toString('utf8');
}

// One exchange = one request being answered: its record, its timers, its close bookkeeping.
function openExchange(state, req, res, rawBody, path, receivedAt) {
  const ex = {
    state, req, res, rawBody, path,
    body: null, endpoint: null, countedAs: null, token: null, d: NO_DIRECTIVES, eol: '\n',
    record: null, closed: false, hungUp: false, timers: new Set(),
  };
  if (state.record) {
    ex.record = {
      method: req.method, path, endpoint: null, headers: req.headers, body: null, rawBody,
      receivedAt, usage: null, aborted: false,
      // Each stream event as written, with when (performance.now(), the tests' clock too).
      eventsWritten: [],
    };
    state.requests.push(ex.record);
  }
  state.inFlight += 1;
  if (state.inFlight > state.maxInFlight) state.maxInFlight = state.inFlight;
  res.once('close', () => closeExchange(ex));
  return ex;
}

function closeExchange(ex) {
  ex.closed = true;
  for (const cancel of ex.timers) cancel();
  ex.state.inFlight -= 1;
  if (ex.countedAs !== null) {
    const { inFlightBy } = ex.state;
    const left = inFlightBy.get(ex.countedAs) - 1;
    if (left > 0) inFlightBy.set(ex.countedAs, left);
    else inFlightBy.delete(ex.countedAs);
  }
  // Closed before the last byte was handed over, and not by us: the client hung up.
  if (!ex.res.writableFinished && !ex.hungUp) {
    ex.state.abortedCount += 1;
    if (ex.record) ex.record.aborted = true;
  }
}

function failUnexpectedly(ex, err) {
  if (ex.closed) return;
  if (ex.res.headersSent) return hangUp(ex);
  sendError(ex, dbError(500, 'INTERNAL_ERROR', `Fake Databricks failed: ${err?.message ?? err}`));
}

// ------------------------------------------------------------------------------ routing

async function respond(ex) {
  const authError = authenticate(ex);
  if (authError) {
    // Still counted per endpoint: a test may check that a refused request was retried.
    countEndpoint(ex, endpointHint(ex));
    return sendError(ex, authError);
  }

  const route = ex.req.method === 'POST' ? routeOf(ex.path) : null;
  if (!route) return sendError(ex, dbError(404, 'ENDPOINT_NOT_FOUND', PATH_HELP));
  if (route.endpoint) setEndpoint(ex, route.endpoint);

  if (ex.state.strict && Buffer.byteLength(ex.rawBody) > MAX_PAYLOAD_BYTES) {
    return sendError(ex, dbError(413, 'BAD_REQUEST', `Request payload size exceeds the limit of ${MAX_PAYLOAD_BYTES} bytes.`));
  }
  const body = parseBody(ex.rawBody);
  if (typeof body === 'string') return sendError(ex, badRequest(body));
  ex.body = body;
  if (ex.record) ex.record.body = body;

  if (!route.endpoint) {
    if (typeof body.model !== 'string' || body.model === '') {
      return sendError(ex, badRequest("Missing required field 'model': the name of a serving endpoint."));
    }
    setEndpoint(ex, body.model);
  }
  if (ex.endpoint.includes('does-not-exist')) return sendError(ex, endpointMissing(ex.endpoint));

  const task = route.task ?? nativeTask(ex.endpoint, body);
  if (task === 'messages') return serveMessages(ex);
  const refusal = ex.state.strict ? refusalOf(ex.endpoint, task, body) : null;
  if (refusal) return sendError(ex, refusal);
  const responsesOnly = ex.state.strict ? responsesOnlyRefusal(ex.endpoint, task) : null;
  if (responsesOnly) return sendError(ex, responsesOnly);
  if (task === 'responses') return serveResponses(ex);
  if (task === 'embeddings') return serveEmbeddings(ex);
  if (task === 'completions') return serveCompletions(ex);
  return serveChat(ex);
}

// ------------------------------------------------------------------------------ strictness

// Databricks' payload limit on foundation-model endpoints.
const MAX_PAYLOAD_BYTES = 4 * 1024 * 1024;
// The top-level fields a Claude endpoint takes on the chat route; it refuses others by name.
const CLAUDE_CHAT_FIELDS = new Set([
  'model', 'messages', 'stream', 'stream_options', 'stop', 'temperature', 'top_p', 'top_k', 'max_tokens', 'n',
  'response_format', 'tools', 'tool_choice', 'thinking', 'metadata', 'user',
]);

// What Databricks refuses that a lenient fake would let through (databricks.md: observed
// rejections), so that a gateway forwarding it untranslated fails its tests. `null` if none.
function refusalOf(endpoint, task, body) {
  const claude = endpoint.includes('claude');
  const gpt = endpoint.includes('gpt');
  if (task === 'chat' && claude) {
    const unknown = Object.keys(body).find((k) => !CLAUDE_CHAT_FIELDS.has(k));
    if (unknown) return badRequest(`unknown field "${unknown}"`);
    const thinking = body.thinking;
    if (thinking?.type === 'enabled') {
      const budget = thinking.budget_tokens;
      if (!Number.isInteger(budget) || budget < 1024) return badRequest('thinking.budget_tokens: must be at least 1024');
      if (!Number.isInteger(body.max_tokens) || body.max_tokens <= budget) {
        return badRequest('`max_tokens` must be greater than `thinking.budget_tokens`');
      }
    }
    for (const m of Array.isArray(body.messages) ? body.messages : []) {
      if (Array.isArray(m?.content) && m.content.some((p) => p?.type === 'text' && p.text === '')) {
        return badRequest('messages: text content blocks must be non-empty');
      }
      // Claude reads cache_control only on an item of a content array (databricks.md).
      if (m?.cache_control !== undefined) return badRequest('unknown field "cache_control"');
    }
  }
  if (task === 'chat' && gpt && 'thinking' in body) return badRequest('unknown field "thinking"');
  if (task === 'chat' && endpoint.includes('gpt-5') && body.temperature !== undefined && body.temperature !== 1) {
    return badRequest(
      `Unsupported value: 'temperature' does not support ${body.temperature} with this model. Only the default (1) value is supported.`,
    );
  }
  return null;
}

// Maps a path to { task, endpoint }; task null means "decide from the endpoint" (native route).
function routeOf(path) {
  if (!path.startsWith(`${BASE}/`)) return null;
  const parts = path.slice(BASE.length + 1).split('/');
  if (parts.length === 2 && parts[0] === 'chat' && parts[1] === 'completions') return { task: 'chat', endpoint: null };
  if (parts.length === 1 && parts[0] === 'embeddings') return { task: 'embeddings', endpoint: null };
  if (parts.length === 1 && parts[0] === 'completions') return { task: 'completions', endpoint: null };
  if (parts.length === 3 && parts.join('/') === 'anthropic/v1/messages') return { task: 'messages', endpoint: null };
  if (parts.length === 1 && parts[0] === 'responses') return { task: 'responses', endpoint: null };
  const native =
    (parts.length === 2 && parts[1] === 'invocations') ||
    (parts.length === 4 && parts[1] === 'served-models' && parts[2] !== '' && parts[3] === 'invocations');
  if (!native || parts[0] === '') return null;
  const endpoint = safeDecode(parts[0]);
  return endpoint ? { task: null, endpoint } : null;
}

// Native invocations carry no task: embedding models are recognised by name, and a body with
// `prompt` but no `messages` is a legacy completion.
function nativeTask(endpoint, body) {
  if (endpoint.includes('gte') || endpoint.includes('bge')) return 'embeddings';
  if (body.messages === undefined && body.prompt !== undefined) return 'completions';
  return 'chat';
}

function safeDecode(segment) {
  try {
    return decodeURIComponent(segment);
  } catch {
    return null;
  }
}

function setEndpoint(ex, endpoint) {
  ex.endpoint = endpoint;
  if (ex.record) ex.record.endpoint = endpoint;
  countEndpoint(ex, endpoint);
}

// The endpoint a request names, read without acting on it (for the counts only).
function endpointHint(ex) {
  const route = ex.req.method === 'POST' ? routeOf(ex.path) : null;
  if (!route) return null;
  if (route.endpoint) return route.endpoint;
  const body = parseBody(ex.rawBody);
  return typeof body === 'object' && typeof body.model === 'string' && body.model !== '' ? body.model : null;
}

function countEndpoint(ex, endpoint) {
  if (endpoint === null || ex.countedAs !== null || ex.closed) return;
  const { countsBy, inFlightBy, maxInFlightBy } = ex.state;
  ex.countedAs = endpoint;
  countsBy.set(endpoint, (countsBy.get(endpoint) ?? 0) + 1);
  const now = (inFlightBy.get(endpoint) ?? 0) + 1;
  inFlightBy.set(endpoint, now);
  if (now > (maxInFlightBy.get(endpoint) ?? 0)) maxInFlightBy.set(endpoint, now);
}

// Returns the parsed object, or a sentence explaining why the body is unusable.
function parseBody(raw) {
  let body;
  try {
    body = JSON.parse(raw);
  } catch (err) {
    return `Request body is not valid JSON: ${err.message}`;
  }
  if (body === null || typeof body !== 'object' || Array.isArray(body)) return 'Request body must be a JSON object.';
  return body;
}

function authenticate(ex) {
  const match = /^Bearer\s+(\S+)\s*$/i.exec(ex.req.headers.authorization ?? '');
  if (!match) return unauthenticated();
  ex.token = match[1];
  if (ex.token === ex.state.token) return null;
  const expiresAt = ex.state.oauth?.tokens.get(ex.token);
  if (expiresAt !== undefined) return Date.now() < expiresAt ? null : tokenExpired();
  return dbError(403, '403', `Invalid access token. [ReqId: ${randomUUID()}]`, { details: false });
}

// ------------------------------------------------------------------------------ OAuth M2M

function oauthState({ clientId, clientSecret, expiresIn = 3600 }) {
  if (typeof clientId !== 'string' || !clientId || typeof clientSecret !== 'string' || !clientSecret) {
    throw new TypeError('oauth needs a non-empty clientId and clientSecret');
  }
  const seconds = Number(expiresIn);
  if (!Number.isInteger(seconds) || seconds < 0) throw new TypeError(`oauth: bad expiresIn '${expiresIn}'`);
  // tokens: access token -> expiry (ms since epoch); kept after expiry so it reads "expired".
  return { clientId, clientSecret, expiresIn: seconds, tokens: new Map(), issued: 0 };
}

// POST /oidc/v1/token, client_credentials with HTTP Basic client authentication.
function issueToken(state, req, res, rawBody) {
  const { oauth } = state;
  if (!basicCredentialsMatch(req.headers.authorization, oauth)) {
    return sendJson(res, 401, { error: 'invalid_client', error_description: 'Client authentication failed' });
  }
  const type = (req.headers['content-type'] ?? '').split(';', 1)[0].trim().toLowerCase();
  if (type !== 'application/x-www-form-urlencoded') {
    return sendJson(res, 400, oauthInvalid('Content-Type must be application/x-www-form-urlencoded'));
  }
  const form = new URLSearchParams(rawBody);
  if (form.get('grant_type') !== 'client_credentials') {
    return sendJson(res, 400, oauthInvalid("Unsupported grant_type: expected 'client_credentials'"));
  }
  if (!(form.get('scope') ?? '').split(' ').includes('all-apis')) {
    return sendJson(res, 400, oauthInvalid("Invalid scope: expected 'all-apis'"));
  }
  const accessToken = jwtLike(oauth);
  oauth.tokens.set(accessToken, Date.now() + oauth.expiresIn * 1000);
  oauth.issued += 1;
  sendJson(res, 200, { access_token: accessToken, token_type: 'Bearer', expires_in: oauth.expiresIn, scope: 'all-apis' });
}

function basicCredentialsMatch(header, { clientId, clientSecret }) {
  const match = /^Basic\s+(\S+)\s*$/i.exec(header ?? '');
  if (!match) return false;
  const pair = Buffer.from(match[1], 'base64').toString('utf8');
  const colon = pair.indexOf(':');
  return colon !== -1 && pair.slice(0, colon) === clientId && pair.slice(colon + 1) === clientSecret;
}

function oauthInvalid(description) {
  return { error: 'invalid_request', error_description: description };
}

// Shaped like the real tokens (a JWT, hence "eyJ..."), but nothing checks the signature.
function jwtLike({ clientId, expiresIn }) {
  const part = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const iat = nowSeconds();
  const claims = { iss: 'fake-databricks', sub: clientId, scope: 'all-apis', iat, exp: iat + expiresIn, jti: randomUUID() };
  return `${part({ alg: 'RS256', typ: 'JWT' })}.${part(claims)}.${randomBytes(32).toString('base64url')}`;
}

function sendJson(res, status, payload) {
  if (res.destroyed) return;
  const text = JSON.stringify(payload);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

// ------------------------------------------------------------------------------ errors

// The Databricks error shape; `details` carries the RequestInfo the real service attaches.
function dbError(status, code, message, { details = true, headers = {} } = {}) {
  const payload = { error_code: code, message };
  if (details) {
    payload.details = [
      { '@type': 'type.googleapis.com/google.rpc.RequestInfo', request_id: randomUUID(), serving_data: '' },
    ];
  }
  return { status, payload, headers };
}

function badRequest(message) {
  return dbError(400, 'BAD_REQUEST', message);
}

function unauthenticated() {
  const message = `Credential was not sent or was of an unsupported type for this API. [ReqId: ${randomUUID()}]`;
  return dbError(401, 401, message, {
    details: false,
    headers: { 'www-authenticate': 'Bearer realm="DatabricksRealm"' },
  });
}

// Uncertain: databricks.md does not say what an expired OAuth token gets. Any 401 with
// `invalid_token` in www-authenticate is what a gateway should take as "refresh and retry".
function tokenExpired() {
  return dbError(401, '401', `Token expired. [ReqId: ${randomUUID()}]`, {
    details: false,
    headers: { 'www-authenticate': 'Bearer realm="DatabricksRealm", error="invalid_token"' },
  });
}

function endpointMissing(name) {
  return dbError(404, 'RESOURCE_DOES_NOT_EXIST', `Endpoint with name '${name}' does not exist.`);
}

// The error a test asked for with `[fake:error=STATUS]`.
function directedError(ex, status) {
  const name = ex.endpoint;
  const leak = ex.d['echo-token'] ? ` (request sent with Authorization: Bearer ${ex.token})` : '';
  switch (status) {
    case 400:
      return badRequest(`The request to endpoint '${name}' is invalid${leak}.`);
    case 401:
      return unauthenticated();
    case 403:
      return dbError(403, 'PERMISSION_DENIED', `User does not have permission 'Query' on Endpoint ${name}${leak}`);
    case 404:
      return endpointMissing(name);
    case 429:
      return dbError(429, 'REQUEST_LIMIT_EXCEEDED', `Exceeded workspace QPS rate limit for ${name}${leak}`);
    case 500:
      return dbError(500, 'INTERNAL_ERROR', `Internal error while serving endpoint '${name}'${leak}.`);
    case 503:
      return dbError(503, 'TEMPORARILY_UNAVAILABLE', `Endpoint '${name}' is temporarily unavailable. Please retry later${leak}.`);
    case 504:
      return dbError(504, 'DEADLINE_EXCEEDED', `The request to endpoint '${name}' timed out${leak}.`);
    default: {
      const code = OTHER_ERROR_CODES[status] ?? (status < 500 ? 'BAD_REQUEST' : 'INTERNAL_ERROR');
      const reason = http.STATUS_CODES[status] ?? 'Error';
      return dbError(status, code, `Endpoint '${name}' answered ${status} ${reason}${leak}.`);
    }
  }
}

const OTHER_ERROR_CODES = {
  408: 'DEADLINE_EXCEEDED',
  409: 'RESOURCE_CONFLICT',
  413: 'BAD_REQUEST',
  499: 'CANCELLED',
  501: 'NOT_IMPLEMENTED',
  502: 'TEMPORARILY_UNAVAILABLE',
};

function sendError(ex, err) {
  if (ex.openaiErrors) err = openaiShaped(err);
  const headers = { ...err.headers };
  if (ex.d['retry-after'] !== undefined) headers['retry-after'] = String(ex.d['retry-after']);
  if (ex.d['error-body'] === 'html') return send(ex, err.status, 'text/html', htmlPage(err.status), headers);
  send(ex, err.status, 'application/json', JSON.stringify(err.payload), headers);
}

// What a load balancer in front of the service answers: not JSON at all.
function htmlPage(status) {
  const title = `${status} ${http.STATUS_CODES[status] ?? 'Error'}`;
  return `<html>\r\n<head><title>${title}</title></head>\r\n<body>\r\n<center><h1>${title}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n`;
}

// ------------------------------------------------------------------------------ directives

// Pulls `[fake:...]` directives out of a text; `text` is what is left, whitespace collapsed.
function parseDirectives(text) {
  const found = new Map();
  if (!text.includes('[fake:')) return { found, text: collapse(text) };
  const rest = text.replace(DIRECTIVE_RE, (_, key, value) => {
    found.set(key.toLowerCase(), value);
    return ' ';
  });
  return { found, text: collapse(rest) };
}

// Turns raw directives into typed values, or returns a sentence saying what is wrong.
function typedDirectives(found) {
  if (found.size === 0) return NO_DIRECTIVES;
  const d = {};
  for (const [key, value] of found) {
    const kind = DIRECTIVES[key];
    if (!kind) return `Unknown fake directive '[fake:${key}]'.`;
    const parsed = directiveValue(kind, value);
    if (parsed === undefined) return `Invalid value for fake directive '[fake:${key}${value === undefined ? '' : `=${value}`}]'.`;
    d[key] = parsed;
  }
  return d;
}

function directiveValue(kind, value) {
  if (kind === 'flag') return value === undefined ? true : undefined;
  if (value === undefined || value === '') return undefined;
  if (kind === 'word') return value;
  if (kind === 'usage-mode') return ['every', 'final', 'none'].includes(value) ? value : undefined;
  if (kind === 'body-kind') return ['html', 'json', 'databricks'].includes(value) ? value : undefined;
  if (!/^\d+$/.test(value)) return undefined;
  const n = Number(value);
  if (kind === 'status') return n >= 400 && n <= 599 ? n : undefined;
  if (kind === 'positive') return n >= 1 ? n : undefined;
  return n;
}

// Directives given to `override()`: checked now, so that a typo throws in the test itself.
function overrideDirectives(directives) {
  if (typeof directives !== 'string') throw new TypeError('override: directives must be a string or null');
  const { found, text } = parseDirectives(directives);
  if (text) throw new Error(`override: not a fake directive: '${text}'`);
  const d = typedDirectives(found);
  if (typeof d === 'string') throw new Error(`override: ${d}`);
  return found;
}

// The prompt's directives over the endpoint's override, if any.
function withOverride(ex, found) {
  const extra = ex.state.overrides.get(ex.endpoint);
  return extra ? new Map([...extra, ...found]) : found;
}

// Applies the directives that act before any answer: bad directive, delay, reset, error.
// Returns true when the caller should go on and answer.
async function preflight(ex, found) {
  const d = typedDirectives(withOverride(ex, found));
  if (typeof d === 'string') {
    sendError(ex, badRequest(d));
    return false;
  }
  ex.d = d;
  if (d.delay && !(await pause(ex, d.delay))) return false;
  if (d.reset) {
    hangUp(ex);
    return false;
  }
  if (d.error) {
    sendError(ex, anthropicShaped(ex) ? anthropicDirectedError(ex, d.error) : directedError(ex, d.error));
    return false;
  }
  if (d['too-long']) {
    const message = 'Input is too long for requested model.';
    sendError(ex, anthropicShaped(ex) ? anthropicError(400, message) : badRequest(JSON.stringify({ message })));
    return false;
  }
  return true;
}

// ------------------------------------------------------------------------------ chat

async function serveChat(ex) {
  const { messages } = ex.body;
  if (!Array.isArray(messages) || messages.length === 0) {
    return sendError(ex, badRequest("Field 'messages' is required and must be a non-empty list."));
  }
  const unknown = ex.state.strict ? unknownMessageField(messages) : null;
  if (unknown) return sendError(ex, badRequest(`unknown field "${unknown}"`));
  const user = lastUserMessage(messages);
  const { found, text } = parseDirectives(user ? textOf(user.content) : '');
  if (!(await preflight(ex, found))) return;
  const answer = chatAnswer(ex, text);
  if (typeof answer === 'string') return sendError(ex, badRequest(answer));
  if (ex.body.stream === true) return streamEvents(ex, chatChunks(ex, answer));
  sendResult(ex, chatCompletion(answer));
}

// A LiteLLM-only field on a message or a tool call, as Databricks names it when it refuses one.
function unknownMessageField(messages) {
  for (const message of messages) {
    const field = LITELLM_MESSAGE_FIELDS.find((f) => message?.[f] !== undefined);
    if (field) return field;
    for (const call of Array.isArray(message?.tool_calls) ? message.tool_calls : []) {
      if (call?.provider_specific_fields !== undefined || call?.function?.provider_specific_fields !== undefined) {
        return 'provider_specific_fields';
      }
    }
  }
  return null;
}

function lastUserMessage(messages) {
  for (let i = messages.length - 1; i >= 0; i--) {
    if (messages[i]?.role === 'user') return messages[i];
  }
  return null;
}

// The text of a message: a string, or the `text` of its text parts.
function textOf(content) {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) return '';
  let text = '';
  for (const part of content) {
    if (part?.type === 'text' && typeof part.text === 'string') text += (text ? ' ' : '') + part.text;
  }
  return text;
}

function promptTokensOf(messages) {
  let tokens = 0;
  for (const message of messages) tokens += countWords(textOf(message?.content)) + 1;
  return tokens;
}

// Everything both the JSON answer and the stream are built from; a string says why the
// request is refused.
function chatAnswer(ex, userText) {
  const { body, d } = ex;
  const promptTokens = promptTokensOf(body.messages);
  const cache = ex.endpoint.includes('claude') ? chatPromptCache(ex) : null;
  const common = { id: `chatcmpl_${randomUUID()}`, created: nowSeconds(), model: servedName(ex), promptTokens, cache };

  // A turn that sends tool results back is answered in text, as a model does.
  const tool = d.tool && body.messages.at(-1)?.role !== 'tool' ? firstTool(body.tools) : null;
  if (tool) {
    const args = JSON.stringify(instanceOf(tool.parameters ?? { type: 'object', properties: {} }, TOOL_STRING));
    const toolCall = { id: `call_${randomUUID()}`, name: tool.name, arguments: args };
    const toolCalls = d['parallel-tools'] ? [toolCall, { ...toolCall, id: `call_${randomUUID()}` }] : [toolCall];
    const words = toolCalls.reduce((n, c) => n + countWords(c.arguments), 0);
    return { ...common, toolCall, toolCalls, finish: 'tool_calls', usage: usageOf(promptTokens, words, undefined, cache) };
  }

  const structured = structuredAnswer(body.response_format, answerText(d, userText, ex.endpoint));
  if (structured?.error) return structured.error;
  const { text, finish } = structured !== null ? { text: structured, finish: 'stop' } : limitWords(answerText(d, userText, ex.endpoint), body.max_tokens);
  const reasoning = wantsReasoning(ex) ? reasoningFor(userText) : null;
  const reasoningTokens = reasoning ? countWords(reasoning.text) : undefined;
  const usage = usageOf(promptTokens, countWords(text) + (reasoningTokens ?? 0), reasoningTokens, cache);
  return { ...common, text, finish, reasoning, usage, redacted: Boolean(d.redacted) };
}

function firstTool(tools) {
  if (!Array.isArray(tools) || tools.length === 0) return null;
  const fn = tools[0]?.function ?? tools[0];
  return typeof fn?.name === 'string' && fn.name ? { name: fn.name, parameters: fn.parameters } : null;
}

// ------------------------------------------------------------------------------ structured output

// The answer text `response_format` asks for: null for plain text, else a JSON text (an object
// echoing the prompt for json_object, an instance of the schema for json_schema), or
// {error} when the format is malformed, as Databricks refuses it.
function structuredAnswer(format, echo) {
  if (format == null || format.type === 'text') return null;
  if (format.type === 'json_object') return JSON.stringify({ answer: echo });
  if (format.type === 'json_schema') {
    const schema = format.json_schema?.schema;
    if (typeof format.json_schema?.name !== 'string' || schema === null || typeof schema !== 'object') {
      return { error: "response_format.json_schema needs a 'name' and a 'schema' object." };
    }
    return JSON.stringify(instanceOf(schema, echo, schema));
  }
  return { error: `Unsupported response_format type '${format.type}'.` };
}

// A value that validates against `schema` (the subset structured output uses: objects with
// required properties, arrays, enums, const, anyOf/oneOf/allOf, $ref into $defs). Every string
// is `sample` (or the first enum value), numbers their minimum or 1, arrays one item.
function instanceOf(schema, sample, root = schema, depth = 0) {
  if (depth > 20 || schema === true || schema == null || typeof schema !== 'object') return sample;
  if (typeof schema.$ref === 'string') return instanceOf(resolveRef(root, schema.$ref), sample, root, depth + 1);
  if ('const' in schema) return schema.const;
  if (Array.isArray(schema.enum) && schema.enum.length > 0) return schema.enum[0];
  for (const key of ['anyOf', 'oneOf']) {
    if (Array.isArray(schema[key]) && schema[key].length > 0) {
      const choice = schema[key].find((s) => s?.type !== 'null') ?? schema[key][0];
      return instanceOf(choice, sample, root, depth + 1);
    }
  }
  if (Array.isArray(schema.allOf) && schema.allOf.length > 0) {
    return instanceOf(Object.assign({}, ...schema.allOf), sample, root, depth + 1);
  }
  const type = Array.isArray(schema.type) ? schema.type.find((t) => t !== 'null') ?? 'null' : schema.type;
  switch (type ?? (schema.properties ? 'object' : 'string')) {
    case 'object': {
      const value = {};
      for (const [name, property] of Object.entries(schema.properties ?? {})) {
        value[name] = instanceOf(property, sample, root, depth + 1);
      }
      return value;
    }
    case 'array': {
      const count = Math.max(1, schema.minItems ?? 1);
      return Array.from({ length: count }, () => instanceOf(schema.items ?? {}, sample, root, depth + 1));
    }
    case 'integer':
      if (schema.minimum !== undefined) return Math.ceil(schema.minimum);
      return schema.exclusiveMinimum !== undefined ? Math.floor(schema.exclusiveMinimum) + 1 : 1;
    case 'number':
      if (schema.minimum !== undefined) return schema.minimum;
      return schema.exclusiveMinimum !== undefined ? schema.exclusiveMinimum + 0.5 : 1.5;
    case 'boolean':
      return true;
    case 'null':
      return null;
    default: {
      const min = schema.minLength ?? 0;
      return sample.length >= min ? sample : sample.padEnd(min, '.');
    }
  }
}

// "#/$defs/Name" (or "#/definitions/Name") within the root schema.
function resolveRef(root, ref) {
  if (!ref.startsWith('#/')) return {};
  let node = root;
  for (const part of ref.slice(2).split('/')) node = node?.[part.replace(/~1/g, '/').replace(/~0/g, '~')];
  return node ?? {};
}

function wantsReasoning({ d, endpoint, body }) {
  if (d.reasoning || endpoint.includes('gpt-oss')) return true;
  const thinking = body.thinking != null && body.thinking.type !== 'disabled';
  return endpoint.includes('claude') && (thinking || body.reasoning_effort != null);
}

function reasoningFor(userText) {
  const text = `Thinking about: ${userText}`.trimEnd();
  const signature = `sig-${createHash('sha256').update(text).digest('base64url').slice(0, 32)}`;
  return { text, signature };
}

function reasoningPart(text, signature) {
  return { type: 'reasoning', summary: [{ type: 'summary_text', text, signature }] };
}

function chatCompletion(a) {
  let message;
  if (a.toolCall) {
    const calls = a.toolCalls.map(({ id, name, arguments: args }) => ({ id, type: 'function', function: { name, arguments: args } }));
    message = { role: 'assistant', content: null, tool_calls: calls };
  } else if (a.reasoning) {
    const content = [reasoningPart(a.reasoning.text, a.reasoning.signature), { type: 'text', text: a.text }];
    if (a.redacted) content.splice(1, 0, REDACTED_PART);
    message = { role: 'assistant', content, tool_calls: null };
  } else {
    message = { role: 'assistant', content: a.text, tool_calls: null };
  }
  return {
    id: a.id,
    object: 'chat.completion',
    created: a.created,
    model: a.model,
    choices: [{ index: 0, message, finish_reason: a.finish, logprobs: null }],
    usage: a.usage,
    system_fingerprint: null,
  };
}

// The stream as a list of events; `content: true` marks the chunks truncate/reset-mid count.
function chatChunks(ex, a) {
  const chunks = ex.d.chunks ?? DEFAULT_CHUNKS;
  const chunk = (delta, finish, usage) => ({
    id: a.id,
    object: 'chat.completion.chunk',
    created: a.created,
    model: a.model,
    choices: [{ index: 0, delta, finish_reason: finish, logprobs: null }],
    usage,
  });
  let reasoningWords = 0;
  const usage = (answerWords) =>
    usageOf(a.promptTokens, reasoningWords + answerWords, a.reasoning ? reasoningWords : undefined, a.cache);

  const events = [];
  if (a.toolCall) {
    const headers = a.toolCalls.map(({ id, name }, index) => ({ index, id, type: 'function', function: { name, arguments: '' } }));
    events.push({ chunk: chunk({ role: 'assistant', content: null, tool_calls: headers }, null, usage(0)) });
  } else {
    events.push({ chunk: chunk({ role: 'assistant', content: '' }, null, usage(0)) });
  }
  if (ex.d['empty-choices']) {
    events.push({ chunk: { ...chunk(null, null, usage(0)), choices: [] } });
    events.push({ chunk: chunk({ role: 'assistant' }, null, usage(0)) });
  }

  if (a.toolCall) {
    // Fragments of every call, interleaved: call 0's first, call 1's first, call 0's second…
    const fragments = a.toolCalls.map((c) => splitPieces(c.arguments, 3));
    const order = [];
    for (let i = 0; i < 3; i++) fragments.forEach((pieces, index) => pieces[i] !== undefined && order.push([index, pieces[i]]));
    let sent = '';
    order.forEach(([index, fragment], i) => {
      sent += ` ${fragment}`;
      // As Databricks sends them: what a fragment does not carry is there as null.
      const delta = { content: null, tool_calls: [{ index, id: null, type: null, function: { name: null, arguments: fragment } }] };
      const finish = i === order.length - 1 ? a.finish : null;
      events.push({ content: true, chunk: chunk(delta, finish, usage(countWords(sent))) });
    });
    return withUsageMode(ex, events, a.usage);
  }

  if (a.reasoning) {
    let thought = '';
    for (const piece of splitPieces(a.reasoning.text, Math.max(2, chunks))) {
      thought += piece;
      reasoningWords = countWords(thought);
      events.push({ chunk: chunk({ content: [reasoningPart(piece, '')] }, null, usage(0)) });
    }
    events.push({ chunk: chunk({ content: [reasoningPart('', a.reasoning.signature)] }, null, usage(0)) });
    if (ex.d.redacted) events.push({ chunk: chunk({ content: [REDACTED_PART] }, null, usage(0)) });
  }

  const pieces = splitPieces(a.text, chunks);
  let said = '';
  pieces.forEach((piece, i) => {
    said += piece;
    const finish = i === pieces.length - 1 ? a.finish : null;
    events.push({ content: true, chunk: chunk({ content: piece }, finish, usage(countWords(said))) });
  });
  return withUsageMode(ex, events, a.usage);
}

// Databricks' redacted thinking: the reasoning, encrypted, to be sent back as it came.
const REDACTED_PART = { type: 'reasoning', summary: [{ type: 'summary_encrypted_text', data: 'EncryptedThinking==' }] };

// Moves a stream's usage where `[fake:usage=…]` says: in every chunk (as built), only in one
// usage-only chunk at the end (`choices: []`), or nowhere.
function withUsageMode(ex, events, finalUsage) {
  const mode = ex.d.usage ?? 'every';
  if (mode === 'every') return events;
  const stripped = events.map((e) => ({ ...e, chunk: { ...e.chunk, usage: null } }));
  if (mode === 'final') {
    const last = events.at(-1).chunk;
    stripped.push({ chunk: { ...last, choices: [], usage: finalUsage } });
  }
  return stripped;
}

// ------------------------------------------------------------------------------ anthropic messages

// POST /serving-endpoints/anthropic/v1/messages (databricks.md): Anthropic's Messages API for
// Claude endpoints, `model` = the endpoint. What the Databricks front door refuses (credentials,
// payload size, JSON, a missing model or endpoint) keeps Databricks' error shape; what Claude
// refuses comes in Anthropic's (`{"type":"error","error":{"type","message"}}`). Answers carry
// thinking blocks when `thinking` is on, `tool_use` blocks with `[fake:tool]` or a forcing
// `tool_choice`, and prompt-cache accounting: the prefix up to a `cache_control` block (tools,
// then system, then messages) is written the first time (`cache_creation_input_tokens`) and
// read on a repeat within its TTL (`cache_read_input_tokens`); `input_tokens` is the rest.
// Unlike Claude there is no minimum cacheable length, so short test prompts cache too.

// The top-level fields Claude takes (betas included); it refuses others by name.
const MESSAGES_FIELDS = new Set([
  'model', 'messages', 'max_tokens', 'system', 'metadata', 'stop_sequences', 'stream', 'temperature', 'top_k',
  'top_p', 'tools', 'tool_choice', 'thinking', 'service_tier', 'container', 'mcp_servers', 'context_management',
  'output_config', 'output_format',
]);
const MAX_CACHE_BREAKPOINTS = 4;
const CACHE_TTL_MS = { '5m': 5 * 60_000, '1h': 60 * 60_000 };
const IMAGE_MEDIA_TYPES = new Set(['image/jpeg', 'image/png', 'image/gif', 'image/webp']);
const TOOL_NAME_RE = /^[a-zA-Z0-9_-]{1,128}$/;
// What an image or a binary document counts as, in prompt tokens.
const MEDIA_TOKENS = 100;

async function serveMessages(ex) {
  ex.messagesRoute = true;
  if (!ex.endpoint.includes('claude')) {
    return sendError(ex, badRequest(
      `Endpoint '${ex.endpoint}' does not support the Anthropic Messages API. Please use /serving-endpoints/chat/completions.`,
    ));
  }
  const refusal = ex.state.strict ? messagesRefusal(ex.body) : basicMessagesRefusal(ex.body);
  if (refusal) return sendError(ex, anthropicError(400, refusal));
  const { messages } = ex.body;
  const prompt = lastUserText(messages);
  const { found, text } = parseDirectives(prompt);
  if (!(await preflight(ex, found))) return;
  const a = messagesAnswer(ex, text);
  if (ex.record) ex.record.usage = a.usage;
  if (ex.body.stream === true) return streamNamedEvents(ex, messagesEvents(ex, a));
  sendResult(ex, messageOf(a));
}

function anthropicShaped(ex) {
  return Boolean(ex.messagesRoute) && ex.d['error-body'] !== 'databricks';
}

// Anthropic's error body for a status, with its `error.type`.
function anthropicError(status, message) {
  const type = ANTHROPIC_ERROR_TYPES[status] ?? (status >= 500 ? 'api_error' : 'invalid_request_error');
  const headers = status === 401 ? { 'www-authenticate': 'Bearer realm="DatabricksRealm"' } : {};
  return { status, payload: { type: 'error', error: { type, message } }, headers };
}

// The error `[fake:error=STATUS]` asks for, as Claude words it (Databricks' wording otherwise).
function anthropicDirectedError(ex, status) {
  if (status === 529 || status === 503) return anthropicError(status, 'Overloaded');
  return anthropicError(status, directedError(ex, status).payload.message);
}

const ANTHROPIC_ERROR_TYPES = {
  400: 'invalid_request_error', 401: 'authentication_error', 402: 'billing_error', 403: 'permission_error',
  404: 'not_found_error', 413: 'request_too_large', 429: 'rate_limit_error', 500: 'api_error', 503: 'overloaded_error',
  504: 'timeout_error', 529: 'overloaded_error',
};

// The text the directives are read from: the last user message with text (a turn of tool results
// alone has none), so that a conversation steers the fake alike on this route and on chat.
function lastUserText(messages) {
  for (let i = messages.length - 1; i >= 0; i--) {
    const m = messages[i];
    if (m?.role !== 'user') continue;
    const text = textOf(m.content);
    if (text) return text;
  }
  return '';
}

function isToolResultTurn(messages) {
  const last = messages.at(-1);
  return last?.role === 'user' && Array.isArray(last.content) && last.content.some((b) => b?.type === 'tool_result');
}

// Enough for the lenient fake to answer at all.
function basicMessagesRefusal(body) {
  if (!Array.isArray(body.messages) || body.messages.length === 0) return 'messages: at least one message is required';
  return null;
}

// What Claude refuses (Anthropic's own messages where known), or null.
function messagesRefusal(body) {
  const unknown = Object.keys(body).find((k) => !MESSAGES_FIELDS.has(k));
  if (unknown) return `${unknown}: Extra inputs are not permitted`;
  if (body.max_tokens === undefined) return 'max_tokens: Field required';
  if (!Number.isInteger(body.max_tokens) || body.max_tokens < 1) return 'max_tokens: Input should be a valid positive integer';
  if (!Array.isArray(body.messages)) return 'messages: Field required';
  if (body.messages.length === 0) return 'messages: at least one message is required';
  if (body.stream !== undefined && typeof body.stream !== 'boolean') return 'stream: Input should be a valid boolean';
  const system = systemRefusal(body.system);
  if (system) return system;
  const thinking = body.thinking;
  if (thinking?.type === 'enabled') {
    if (!Number.isInteger(thinking.budget_tokens) || thinking.budget_tokens < 1024) {
      return 'thinking.enabled.budget_tokens: Input should be greater than or equal to 1024';
    }
    if (body.max_tokens <= thinking.budget_tokens) return '`max_tokens` must be greater than `thinking.budget_tokens`';
  }
  if (thinking != null && thinking.type !== 'disabled') {
    if (body.temperature !== undefined && body.temperature !== 1) {
      return '`temperature` may only be set to 1 when thinking is enabled or in adaptive mode.';
    }
    if (body.top_k !== undefined) return '`top_k` must be unset when thinking is enabled.';
  }
  for (const [i, tool] of (Array.isArray(body.tools) ? body.tools : []).entries()) {
    if (typeof tool?.name !== 'string' || !TOOL_NAME_RE.test(tool.name)) {
      return `tools.${i}.custom.name: String should match pattern '^[a-zA-Z0-9_-]{1,128}$'`;
    }
    if ((tool.type === undefined || tool.type === 'custom') && (tool.input_schema === null || typeof tool.input_schema !== 'object')) {
      return `tools.${i}.custom.input_schema: Field required`;
    }
  }
  const messages = messagesShapeRefusal(body.messages);
  if (messages) return messages;
  const breakpoints = cacheBreakpoints(body);
  if (breakpoints > MAX_CACHE_BREAKPOINTS) {
    return `A maximum of ${MAX_CACHE_BREAKPOINTS} blocks with cache_control may be provided. Found ${breakpoints}.`;
  }
  return null;
}

function systemRefusal(system) {
  if (system === undefined || typeof system === 'string') return null;
  if (!Array.isArray(system)) return 'system: Input should be a valid string or list';
  for (const [i, block] of system.entries()) {
    if (block?.type !== 'text') return `system.${i}.type: Input should be 'text'`;
    if (typeof block.text !== 'string' || block.text === '') return 'system: text content blocks must be non-empty';
  }
  return null;
}

function messagesShapeRefusal(messages) {
  let previousToolUses = [];
  for (const [i, m] of messages.entries()) {
    if (m?.role === 'system') {
      // System messages among the others (Anthropic's newer form): text only.
      const refusal = systemRefusal(m.content ?? null);
      if (refusal) return refusal.replace(/^system/, `messages.${i}.content`);
      continue;
    }
    if (m?.role !== 'user' && m?.role !== 'assistant') return `messages.${i}.role: Input should be 'user', 'assistant' or 'system'`;
    const blocks = typeof m.content === 'string' ? [] : m.content;
    if (!Array.isArray(blocks)) return `messages.${i}.content: Input should be a valid string or list`;
    if (typeof m.content === 'string' && m.content === '' && i < messages.length - 1) {
      return `messages.${i}: all messages must have non-empty content except for the optional final assistant message`;
    }
    for (const [j, block] of blocks.entries()) {
      const refusal = blockRefusal(block, m.role, `messages.${i}.content.${j}`);
      if (refusal) return refusal;
    }
    // Every tool_use must be answered by a tool_result in the very next message, and every
    // tool_result must answer a tool_use of the message before.
    const results = blocks.filter((b) => b?.type === 'tool_result').map((b) => b.tool_use_id);
    const unexpected = results.find((id) => !previousToolUses.includes(id));
    if (unexpected !== undefined) {
      return `messages.${i}.content.${blocks.findIndex((b) => b?.tool_use_id === unexpected)}: unexpected \`tool_use_id\` found in \`tool_result\` blocks: ${unexpected}. Each \`tool_result\` block must have a corresponding \`tool_use\` block in the previous message.`;
    }
    const unanswered = previousToolUses.filter((id) => !results.includes(id));
    if (unanswered.length > 0) {
      return `messages.${i - 1}: \`tool_use\` ids were found without \`tool_result\` blocks immediately after: ${unanswered.join(', ')}. Each \`tool_use\` block must have a corresponding \`tool_result\` block in the next message.`;
    }
    previousToolUses = m.role === 'assistant' ? blocks.filter((b) => b?.type === 'tool_use').map((b) => b.id) : [];
  }
  if (previousToolUses.length > 0 && messages.at(-1).role === 'assistant') {
    return `messages.${messages.length - 1}: the final assistant message cannot contain \`tool_use\` blocks without their \`tool_result\``;
  }
  return null;
}

function blockRefusal(block, role, at) {
  if (block === null || typeof block !== 'object') return `${at}: Input should be a valid dictionary`;
  switch (block.type) {
    case 'text':
      if (typeof block.text !== 'string') return `${at}.text.text: Field required`;
      if (block.text === '') return 'messages: text content blocks must be non-empty';
      break;
    case 'image':
      if (block.source?.type === 'base64') {
        if (!IMAGE_MEDIA_TYPES.has(block.source.media_type)) {
          return `${at}.image.source.base64.media_type: Input should be 'image/jpeg', 'image/png', 'image/gif' or 'image/webp'`;
        }
        if (typeof block.source.data !== 'string') return `${at}.image.source.base64.data: Field required`;
      } else if (block.source?.type === 'url') {
        if (typeof block.source.url !== 'string') return `${at}.image.source.url.url: Field required`;
      } else {
        return `${at}.image.source: Input tag '${block.source?.type}' found using 'type' does not match any of the expected tags: 'base64', 'url'`;
      }
      break;
    case 'document':
      if (!['base64', 'text', 'url', 'content'].includes(block.source?.type)) {
        return `${at}.document.source: Input tag '${block.source?.type}' found using 'type' does not match any of the expected tags: 'base64', 'text', 'url', 'content'`;
      }
      break;
    case 'tool_use':
      if (role !== 'assistant') return `${at}: tool_use blocks may only appear in assistant messages`;
      if (typeof block.id !== 'string' || typeof block.name !== 'string') return `${at}.tool_use.id: Field required`;
      if (block.input === null || typeof block.input !== 'object' || Array.isArray(block.input)) {
        return `${at}.tool_use.input: Input should be a valid dictionary`;
      }
      break;
    case 'tool_result':
      if (role !== 'user') return `${at}: tool_result blocks may only appear in user messages`;
      if (typeof block.tool_use_id !== 'string') return `${at}.tool_result.tool_use_id: Field required`;
      break;
    case 'thinking':
      if (role !== 'assistant') return `${at}: thinking blocks may only appear in assistant messages`;
      if (typeof block.thinking !== 'string' || typeof block.signature !== 'string') return `${at}.thinking.signature: Field required`;
      break;
    case 'redacted_thinking':
      if (role !== 'assistant') return `${at}: redacted_thinking blocks may only appear in assistant messages`;
      if (typeof block.data !== 'string') return `${at}.redacted_thinking.data: Field required`;
      break;
    default:
      return `${at}: Input tag '${block.type}' found using 'type' does not match any of the expected tags`;
  }
  const cache = block.cache_control;
  if (cache !== undefined && (cache?.type !== 'ephemeral' || (cache.ttl !== undefined && !CACHE_TTL_MS[cache.ttl]))) {
    return `${at}.cache_control: Input should be {"type": "ephemeral"} with an optional ttl of '5m' or '1h'`;
  }
  return null;
}

function cacheBreakpoints(body) {
  let n = 0;
  const count = (blocks) => {
    for (const b of Array.isArray(blocks) ? blocks : []) if (b?.cache_control) n += 1;
  };
  count(body.tools);
  count(body.system);
  for (const m of body.messages) count(m?.content);
  return n;
}

// ---- prompt tokens and the prompt cache

// The prompt as Claude caches it, in order: tools, system blocks, then each message's blocks.
// Each segment has its tokens (one per word, one per message, MEDIA_TOKENS per image or binary
// document) and, when it carries cache_control, a breakpoint with its TTL.
function promptSegments(body) {
  const segments = [];
  const add = (value, tokens, cache) => segments.push({ key: JSON.stringify(withoutCacheControl(value)), tokens, ttl: cache ? CACHE_TTL_MS[cache.ttl ?? '5m'] : 0 });
  for (const tool of Array.isArray(body.tools) ? body.tools : []) {
    add(tool, countWords(`${tool?.name ?? ''} ${tool?.description ?? ''}`) + 1, tool?.cache_control);
  }
  if (typeof body.system === 'string') add(body.system, countWords(body.system), null);
  for (const block of Array.isArray(body.system) ? body.system : []) add(block, countWords(block?.text ?? ''), block?.cache_control);
  for (const m of body.messages) {
    if (typeof m?.content === 'string') {
      add(m, countWords(m.content) + 1, null);
      continue;
    }
    (m?.content ?? []).forEach((block, j) => add({ role: m.role, block }, blockTokens(block) + (j === 0 ? 1 : 0), block?.cache_control));
  }
  return segments;
}

function blockTokens(block) {
  switch (block?.type) {
    case 'text':
      return countWords(block.text ?? '');
    case 'image':
      return MEDIA_TOKENS;
    case 'document':
      return block.source?.type === 'text' ? countWords(block.source.data ?? '') : MEDIA_TOKENS;
    case 'tool_use':
      return countWords(JSON.stringify(block.input ?? {}).replace(/[{}":,]/g, ' ')) + 1;
    case 'tool_result':
      return countWords(typeof block.content === 'string' ? block.content : textOf(block.content)) + 1;
    case 'thinking':
      return countWords(block.thinking ?? '');
    default:
      return 1;
  }
}

function withoutCacheControl(value) {
  if (Array.isArray(value)) return value.map(withoutCacheControl);
  if (value === null || typeof value !== 'object') return value;
  const copy = {};
  for (const [k, v] of Object.entries(value)) if (k !== 'cache_control') copy[k] = withoutCacheControl(v);
  return copy;
}

// Input, cache-creation and cache-read tokens of a request, updating the cache: the longest
// prefix ending at a breakpoint that is cached (and not expired) is read, the rest up to the
// last breakpoint is written.
function promptUsage(ex) {
  return cachedPrompt(ex, promptSegments(ex.body));
}

function cachedPrompt(ex, segments) {
  const { promptCache } = ex.state;
  const now = Date.now();
  const hash = createHash('sha256').update(ex.endpoint);
  let total = 0;
  const breakpoints = [];
  for (const segment of segments) {
    hash.update(segment.key);
    total += segment.tokens;
    if (segment.ttl) breakpoints.push({ digest: hash.copy().digest('base64url'), tokens: total, ttl: segment.ttl });
  }
  let read = 0;
  for (const bp of breakpoints) {
    if ((promptCache.get(bp.digest) ?? 0) > now) read = bp.tokens;
  }
  const last = breakpoints.at(-1)?.tokens ?? 0;
  const creation = Math.max(0, last - read);
  for (const bp of breakpoints) promptCache.set(bp.digest, Math.max(promptCache.get(bp.digest) ?? 0, now + bp.ttl));
  return { input_tokens: total - read - creation, cache_creation_input_tokens: creation, cache_read_input_tokens: read };
}

// The chat route's prompt as Claude caches it, counted as `promptTokensOf` counts it (one per
// word and one per message): a string content is one segment, each part of a content array
// its own, a breakpoint where a part carries cache_control.
function chatPromptSegments(messages) {
  const segments = [];
  for (const m of messages) {
    const parts = Array.isArray(m?.content) ? m.content : [];
    if (parts.length === 0) {
      segments.push({ key: JSON.stringify(m), tokens: countWords(textOf(m?.content)) + 1, ttl: 0 });
      continue;
    }
    parts.forEach((part, j) => {
      const words = part?.type === 'text' && typeof part.text === 'string' ? countWords(part.text) : 0;
      const cache = part?.cache_control;
      const key = JSON.stringify({ role: m.role, part: withoutCacheControl(part) });
      segments.push({ key, tokens: words + (j === 0 ? 1 : 0), ttl: cache ? CACHE_TTL_MS[cache.ttl ?? '5m'] ?? 0 : 0 });
    });
  }
  return segments;
}

// Cache reads and writes of a chat request to a Claude endpoint, or null when nothing in it
// carries cache_control (the usage then has no cache fields, as a request without caching).
function chatPromptCache(ex) {
  const segments = chatPromptSegments(ex.body.messages);
  if (!segments.some((s) => s.ttl)) return null;
  const { cache_creation_input_tokens: creation, cache_read_input_tokens: read } = cachedPrompt(ex, segments);
  return { creation, read };
}

// ---- answers

function messagesAnswer(ex, userText) {
  const { body, d } = ex;
  const prompt = promptUsage(ex);
  const blocks = [];
  const thinking = body.thinking != null && body.thinking.type !== 'disabled';
  if (thinking || d.reasoning) {
    const { text, signature } = reasoningFor(userText);
    blocks.push({ type: 'thinking', thinking: text, signature });
    if (d.redacted) blocks.push({ type: 'redacted_thinking', data: 'EncryptedThinking==' });
  }
  let stopReason = 'end_turn';
  let stopSequence = null;
  const tool = chosenTool(ex);
  if (tool) {
    const calls = d['parallel-tools'] ? 2 : 1;
    for (let i = 0; i < calls; i++) {
      blocks.push({ type: 'tool_use', id: `toolu_${randomId(24)}`, name: tool.name, input: instanceOf(tool.input_schema ?? { type: 'object' }, TOOL_STRING) });
    }
    stopReason = 'tool_use';
  } else {
    let text = answerText(d, userText, ex.endpoint);
    const stop = firstStopSequence(text, body.stop_sequences);
    if (stop) {
      text = text.slice(0, text.indexOf(stop));
      stopReason = 'stop_sequence';
      stopSequence = stop;
    }
    const limited = limitWords(text, body.max_tokens);
    if (limited.finish === 'length') {
      stopReason = 'max_tokens';
      stopSequence = null;
    }
    if (limited.text) blocks.push({ type: 'text', text: limited.text });
  }
  const output = blocks.reduce((n, b) => n + countWords(b.text ?? b.thinking ?? JSON.stringify(b.input ?? '').replace(/[{}":,]/g, ' ')), 0);
  return {
    id: `msg_${randomId(24)}`,
    model: servedName(ex),
    blocks,
    stopReason,
    stopSequence,
    usage: { ...prompt, output_tokens: output, service_tier: 'standard' },
  };
}

// The tool Claude calls: with `[fake:tool]` (not right after a tool result: the model answers
// it), or whenever `tool_choice` forces one; never with `tool_choice: none` or no custom tools.
function chosenTool(ex) {
  const { body, d } = ex;
  const tools = (Array.isArray(body.tools) ? body.tools : []).filter((t) => t?.input_schema && (t.type === undefined || t.type === 'custom'));
  const choice = body.tool_choice?.type;
  if (tools.length === 0 || choice === 'none') return null;
  if (choice === 'tool') return tools.find((t) => t.name === body.tool_choice.name) ?? null;
  if (choice === 'any') return tools[0];
  return d.tool && !isToolResultTurn(body.messages) ? tools[0] : null;
}

function firstStopSequence(text, stops) {
  let first = null;
  for (const stop of Array.isArray(stops) ? stops : []) {
    const at = typeof stop === 'string' && stop ? text.indexOf(stop) : -1;
    if (at !== -1 && (first === null || at < text.indexOf(first))) first = stop;
  }
  return first;
}

function messageOf(a) {
  return {
    id: a.id,
    type: 'message',
    role: 'assistant',
    model: a.model,
    content: a.blocks,
    stop_reason: a.stopReason,
    stop_sequence: a.stopSequence,
    usage: a.usage,
  };
}

// The stream as named events; `content: true` marks the deltas truncate/reset-mid/error-mid count.
function messagesEvents(ex, a) {
  const chunks = ex.d.chunks ?? DEFAULT_CHUNKS;
  const events = [];
  const push = (name, data, content = false) => events.push({ name, data: { type: name, ...data }, content });
  const { output_tokens: outputTokens, service_tier: _tier, ...prompt } = a.usage;
  push('message_start', {
    message: { ...messageOf(a), content: [], stop_reason: null, stop_sequence: null, usage: { ...prompt, output_tokens: 1 } },
  });
  push('ping', {});
  a.blocks.forEach((block, index) => {
    const delta = (d, content = true) => push('content_block_delta', { index, delta: d }, content);
    switch (block.type) {
      case 'thinking':
        push('content_block_start', { index, content_block: { type: 'thinking', thinking: '', signature: '' } });
        for (const piece of splitPieces(block.thinking, Math.max(2, chunks))) delta({ type: 'thinking_delta', thinking: piece }, false);
        delta({ type: 'signature_delta', signature: block.signature }, false);
        break;
      case 'redacted_thinking':
        push('content_block_start', { index, content_block: block });
        break;
      case 'text':
        push('content_block_start', { index, content_block: { type: 'text', text: '' } });
        for (const piece of splitPieces(block.text, chunks)) delta({ type: 'text_delta', text: piece });
        break;
      case 'tool_use':
        push('content_block_start', { index, content_block: { type: 'tool_use', id: block.id, name: block.name, input: {} } });
        delta({ type: 'input_json_delta', partial_json: '' }, false);
        for (const piece of splitPieces(JSON.stringify(block.input), 3)) delta({ type: 'input_json_delta', partial_json: piece });
        break;
    }
    push('content_block_stop', { index });
  });
  push('message_delta', { delta: { stop_reason: a.stopReason, stop_sequence: a.stopSequence }, usage: { output_tokens: outputTokens } });
  push('message_stop', {});
  return events;
}

// Writes named events with the stream directives: spacing, sse-split/-crlf, malformed (after
// the first event), truncate (a clean end with no message_stop), reset-mid (a hang-up) and
// error-mid (Anthropic's `error` event), the last three after two content deltas.
async function streamNamedEvents(ex, events) {
  const { d, res } = ex;
  if (ex.closed) return;
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
  res.flushHeaders();
  ex.eol = d['sse-crlf'] ? '\r\n' : '\n';
  const stopAt = d.truncate || d['reset-mid'] || d['error-mid'] ? cutPoint(events) : -1;
  let contentSent = 0;
  for (let i = 0; i < events.length; i++) {
    const event = events[i];
    if (event.content && contentSent === stopAt) {
      if (d['reset-mid']) return hangUpAfterFlush(ex);
      if (d['error-mid']) {
        await writeEvent(ex, JSON.stringify({ type: 'error', error: { type: 'overloaded_error', message: 'Overloaded' } }), 'error');
        return res.end();
      }
      return res.end();
    }
    if (i > 0 && !(await pause(ex, d.spacing))) return;
    if (!(await writeEvent(ex, JSON.stringify(event.data), event.name))) return;
    if (event.content) contentSent += 1;
    if (i === 0 && d.malformed && !(await writeEvent(ex, MALFORMED_EVENT, 'content_block_delta'))) return;
  }
  if (!ex.closed) res.end();
}

const BASE62 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';

function randomId(length) {
  const bytes = randomBytes(length);
  let id = '';
  for (const b of bytes) id += BASE62[b % 62];
  return id;
}

// ------------------------------------------------------------------------------ completions

async function serveCompletions(ex) {
  const prompts = stringList(ex.body.prompt);
  if (!prompts) return sendError(ex, badRequest("Field 'prompt' must be a string or a non-empty list of strings."));
  const { found, text: userText } = parseDirectives(prompts[0]);
  if (!(await preflight(ex, found))) return;

  const promptTokens = prompts.reduce((sum, p) => sum + countWords(p), 0);
  const { text, finish } = limitWords(answerText(ex.d, userText, ex.endpoint), ex.body.max_tokens);
  const a = {
    id: `cmpl_${randomUUID()}`, created: nowSeconds(), model: servedName(ex),
    promptTokens, text, finish, usage: usageOf(promptTokens, countWords(text)),
  };
  if (ex.body.stream === true) return streamEvents(ex, completionChunks(ex, a));
  sendResult(ex, {
    id: a.id,
    object: 'text_completion',
    created: a.created,
    model: a.model,
    choices: [{ index: 0, text: a.text, finish_reason: a.finish, logprobs: null }],
    usage: a.usage,
  });
}

function completionChunks(ex, a) {
  const chunk = (choices, usage) => ({ id: a.id, object: 'text_completion', created: a.created, model: a.model, choices, usage });
  const events = [];
  if (ex.d['empty-choices']) events.push({ chunk: chunk([], usageOf(a.promptTokens, 0)) });
  const pieces = splitPieces(a.text, ex.d.chunks ?? DEFAULT_CHUNKS);
  let said = '';
  pieces.forEach((piece, i) => {
    said += piece;
    const finish = i === pieces.length - 1 ? a.finish : null;
    const choice = { index: 0, text: piece, finish_reason: finish, logprobs: null };
    events.push({ content: true, chunk: chunk([choice], usageOf(a.promptTokens, countWords(said))) });
  });
  return events;
}

// ------------------------------------------------------------------------------ embeddings

async function serveEmbeddings(ex) {
  const inputs = stringList(ex.body.input);
  if (!inputs) return sendError(ex, badRequest("Field 'input' must be a string or a non-empty list of strings."));
  if (!(await preflight(ex, parseDirectives(inputs[0]).found))) return;

  const promptTokens = inputs.reduce((sum, input) => sum + countWords(input), 0);
  // Every input is cleaned the same way, so equal texts get equal vectors wherever they sit.
  const data = inputs.map((input, index) => ({
    index,
    object: 'embedding',
    embedding: embeddingOf(parseDirectives(input).text),
  }));
  sendResult(ex, {
    object: 'list',
    model: servedName(ex),
    data,
    usage: { prompt_tokens: promptTokens, total_tokens: promptTokens },
  });
}

// A unit vector drawn from a PRNG seeded with the text's hash: same text, same vector.
function embeddingOf(text) {
  const seed = createHash('sha256').update(text).digest();
  let x = seed.readUInt32LE(0) || 1;
  const vector = new Array(EMBEDDING_DIMS);
  let norm = 0;
  for (let i = 0; i < EMBEDDING_DIMS; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    const value = (x >>> 0) / 2147483648 - 1;
    vector[i] = value;
    norm += value * value;
  }
  const scale = 1 / Math.sqrt(norm);
  for (let i = 0; i < EMBEDDING_DIMS; i++) vector[i] = Math.round(vector[i] * scale * 1e6) / 1e6;
  return vector;
}

// ------------------------------------------------------------------------------ responses
//
// `POST /serving-endpoints/responses` (databricks.md, "OpenAI Responses"): only OpenAI endpoints
// (GPT-5, Codex models) take it; the body's `model` is the endpoint. Stateless: no
// `previous_response_id`, no item references. Answers are Response objects; streams are
// `event:` + `data:` with a `sequence_number` on every event, usage in `response.completed`.
// Errors on this route are OpenAI-shaped (`{"error": {...}}`). The same `[fake:...]` directives
// steer it (in the last user text): tool, parallel-tools, reasoning, reply, chunks, spacing,
// error, delay, reset, truncate, reset-mid, error-mid, malformed, usage, sse-crlf, sse-split.
// Prompt caching: a request whose leading items (with `instructions`) an earlier request to the
// same endpoint sent reports their tokens as `input_tokens_details.cached_tokens`.

// The top-level fields OpenAI's Responses API takes; others get its "Unknown parameter" 400.
const RESPONSES_FIELDS = new Set([
  'model', 'input', 'instructions', 'tools', 'tool_choice', 'max_output_tokens', 'max_tool_calls', 'stream',
  'stream_options', 'temperature', 'top_p', 'top_logprobs', 'reasoning', 'text', 'store', 'metadata', 'user',
  'parallel_tool_calls', 'include', 'prompt_cache_key', 'truncation', 'service_tier', 'safety_identifier',
  'background', 'previous_response_id', 'conversation', 'prompt', 'client_metadata',
]);
const RESPONSES_ROLES = new Set(['user', 'assistant', 'system', 'developer']);
// What the fake's reasoning items carry as `encrypted_content`; anything else sent back is
// refused, as OpenAI refuses reasoning it did not encrypt (message uncertain).
const ENCRYPTED_PREFIX = 'fake-encrypted:';
const RESPONSES_CACHE_LIMIT = 10_000;

// OpenAI's own models: the endpoints that take `/responses` (the rest use chat completions or
// open-responses). Codex models take nothing else.
function isOpenAIEndpoint(endpoint) {
  return endpoint.includes('codex') || (endpoint.includes('gpt') && !endpoint.includes('gpt-oss'));
}

// A chat (or completions) request to a Codex model (databricks.md: "Codex models accept only
// this API"); null otherwise.
function responsesOnlyRefusal(endpoint, task) {
  if (task === 'responses' || task === 'embeddings' || !endpoint.includes('codex')) return null;
  return badRequest(`Model ${endpoint} only supports the Responses API. Please use /serving-endpoints/responses`);
}

async function serveResponses(ex) {
  ex.openaiErrors = true;
  const refusal = responsesRefusal(ex.endpoint, ex.body, ex.state.strict);
  if (refusal) return sendError(ex, refusal);
  const { found, text } = parseDirectives(lastResponsesUserText(ex.body.input));
  if (!(await preflight(ex, found))) return;
  const answer = responsesAnswer(ex, text);
  if (typeof answer === 'string') return sendError(ex, badRequest(answer));
  if (ex.body.stream === true) return streamResponseEvents(ex, answer);
  sendResult(ex, responseObject(ex, answer, answer.status, answer.items, answer.usage));
}

// The Databricks error a test asked for, in OpenAI's shape (the shape this route answers in).
function openaiShaped(err) {
  const { status, payload } = err;
  if (!payload || payload.error) return err;
  const type = status === 401 ? 'authentication_error' : status === 403 ? 'permission_error'
    : status === 404 ? 'not_found_error' : status === 429 ? 'rate_limit_exceeded'
    : status >= 500 ? 'server_error' : 'invalid_request_error';
  const code = typeof payload.error_code === 'string' ? payload.error_code.toLowerCase() : String(payload.error_code);
  return { ...err, payload: { error: { message: payload.message, type, param: payload.param ?? null, code } } };
}

function responsesBadRequest(message, param = null) {
  return { ...badRequest(message), payload: { error: { message, type: 'invalid_request_error', param, code: null } } };
}

// What the Responses API refuses: always a missing model or input; in strict mode also what a
// lenient server would let through (unknown fields, stateful features, a non-OpenAI endpoint,
// an output without its call, reasoning it did not encrypt). null if none.
function responsesRefusal(endpoint, body, strict) {
  const { input } = body;
  if (typeof input !== 'string' && !(Array.isArray(input) && input.length > 0)) {
    return responsesBadRequest("Missing required parameter: 'input'.", 'input');
  }
  if (!strict) return null;
  if (!isOpenAIEndpoint(endpoint)) {
    return responsesBadRequest(
      `Endpoint '${endpoint}' does not support the Responses API; use /serving-endpoints/chat/completions or /serving-endpoints/open-responses.`,
    );
  }
  const unknown = Object.keys(body).find((k) => !RESPONSES_FIELDS.has(k));
  if (unknown) return responsesBadRequest(`Unknown parameter: '${unknown}'.`, unknown);
  for (const field of ['previous_response_id', 'conversation']) {
    if (body[field] != null) return responsesBadRequest(`'${field}' is not supported: responses are not stored.`, field);
  }
  if (body.background === true) return responsesBadRequest("'background' is not supported: responses are not stored.", 'background');
  if (endpoint.includes('gpt-5') && body.temperature !== undefined && body.temperature !== null && body.temperature !== 1) {
    return responsesBadRequest(`Unsupported parameter: 'temperature' is not supported with this model.`, 'temperature');
  }
  if (body.max_output_tokens != null && !(Number.isInteger(body.max_output_tokens) && body.max_output_tokens >= 1)) {
    return responsesBadRequest("Invalid 'max_output_tokens': expected a positive integer.", 'max_output_tokens');
  }
  for (const [i, tool] of (Array.isArray(body.tools) ? body.tools : []).entries()) {
    if (tool?.type === 'function' && (typeof tool.name !== 'string' || tool.name === '')) {
      return responsesBadRequest(`Missing required parameter: 'tools[${i}].name'.`, `tools[${i}].name`);
    }
  }
  const format = body.text?.format;
  if (format?.type === 'json_schema' && (typeof format.name !== 'string' || typeof format.schema !== 'object' || format.schema === null)) {
    return responsesBadRequest("Missing required parameter: 'text.format.name' or 'text.format.schema'.", 'text.format');
  }
  return Array.isArray(input) ? itemsRefusal(input) : null;
}

function itemsRefusal(items) {
  const calls = new Set();
  for (const [i, item] of items.entries()) {
    const param = `input[${i}]`;
    if (item === null || typeof item !== 'object' || Array.isArray(item)) return responsesBadRequest(`Invalid '${param}': expected an object.`, param);
    const type = item.type ?? (item.role !== undefined ? 'message' : undefined);
    switch (type) {
      case 'message':
        if (!RESPONSES_ROLES.has(item.role)) return responsesBadRequest(`Invalid value for '${param}.role': '${item.role}'.`, `${param}.role`);
        if (typeof item.content !== 'string' && !Array.isArray(item.content)) {
          return responsesBadRequest(`Invalid '${param}.content': expected a string or a list of content parts.`, `${param}.content`);
        }
        break;
      case 'function_call':
      case 'custom_tool_call':
        if (typeof item.call_id !== 'string' || typeof item.name !== 'string') {
          return responsesBadRequest(`Missing required parameter: '${param}.call_id'.`, `${param}.call_id`);
        }
        calls.add(item.call_id);
        break;
      case 'function_call_output':
      case 'custom_tool_call_output':
        if (!calls.has(item.call_id)) {
          return responsesBadRequest(`No tool call found for function call output with call_id ${item.call_id}.`, `${param}.call_id`);
        }
        break;
      case 'reasoning':
        if (typeof item.encrypted_content === 'string' && !item.encrypted_content.startsWith(ENCRYPTED_PREFIX)) {
          return responsesBadRequest(`The encrypted content for item ${item.id ?? param} could not be verified.`, `${param}.encrypted_content`);
        }
        break;
      case 'item_reference':
        return responsesBadRequest(`Item references are not supported: responses are not stored.`, param);
      case undefined:
        return responsesBadRequest(`Missing required parameter: '${param}.type'.`, `${param}.type`);
      default:
        break;
    }
  }
  return null;
}

// The text of the last user message (where directives are read).
function lastResponsesUserText(input) {
  if (typeof input === 'string') return input;
  if (!Array.isArray(input)) return '';
  for (let i = input.length - 1; i >= 0; i--) {
    const item = input[i];
    if (item?.role === 'user' && (item.type === undefined || item.type === 'message')) return responsesTextOf(item.content);
  }
  return '';
}

// The text of a Responses content: a string, or its text parts joined.
function responsesTextOf(content) {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) return '';
  return content
    .filter((p) => typeof p?.text === 'string' && ['input_text', 'output_text', 'text'].includes(p.type))
    .map((p) => p.text)
    .join(' ');
}

// Token counts per unit of the prompt (instructions, then each item): one a word, one an item.
function responsesUnits(body) {
  const units = [];
  if (typeof body.instructions === 'string') units.push({ key: `i:${body.instructions}`, tokens: countWords(body.instructions) + 1 });
  const items = typeof body.input === 'string' ? [{ role: 'user', content: body.input }] : body.input;
  for (const item of items) {
    const text = [responsesTextOf(item.content), item.arguments, item.input, typeof item.output === 'string' ? item.output : responsesTextOf(item.output)]
      .filter((t) => typeof t === 'string')
      .join(' ');
    units.push({ key: JSON.stringify(item), tokens: countWords(text) + 1 });
  }
  return units;
}

// Input tokens, and how many of them a previous request to the endpoint already sent as the
// same leading units (the prefix cache); this request's prefixes are remembered for the next.
function promptCache(ex) {
  const cache = (ex.state.responsesCache ??= new Map());
  if (cache.size > RESPONSES_CACHE_LIMIT) cache.clear();
  const hash = createHash('sha256').update(ex.endpoint);
  let input = 0;
  let cached = 0;
  for (const unit of responsesUnits(ex.body)) {
    hash.update(unit.key);
    input += unit.tokens;
    const key = hash.copy().digest('base64url');
    if (cache.has(key)) cached = input;
    else cache.set(key, true);
  }
  return { input, cached };
}

// Everything the JSON answer and the stream are built from; a string says why it is refused.
function responsesAnswer(ex, userText) {
  const { body, d } = ex;
  const { input, cached } = promptCache(ex);
  const common = { id: `resp_${randomBytes(24).toString('hex')}`, createdAt: nowSeconds(), model: servedName(ex) };
  const items = [];
  let reasoningTokens = 0;
  const effort = body.reasoning?.effort;
  if ((d.reasoning || endpointReasons(ex.endpoint)) && effort !== 'none') {
    const { text } = reasoningFor(userText);
    reasoningTokens = countWords(text);
    const summary = body.reasoning?.summary ? [{ type: 'summary_text', text }] : [];
    const item = { id: `rs_${randomBytes(16).toString('hex')}`, type: 'reasoning', summary };
    if (Array.isArray(body.include) && body.include.includes('reasoning.encrypted_content')) {
      item.encrypted_content = ENCRYPTED_PREFIX + Buffer.from(text).toString('base64');
    }
    items.push({ item, text: body.reasoning?.summary ? text : '' });
  }

  const last = Array.isArray(body.input) ? body.input.at(-1) : null;
  const tool = d.tool && last?.type !== 'function_call_output' ? firstResponsesTool(body.tools) : null;
  if (tool) {
    const args = JSON.stringify(instanceOf(tool.parameters ?? { type: 'object', properties: {} }, TOOL_STRING));
    const count = d['parallel-tools'] ? 2 : 1;
    let words = 0;
    for (let i = 0; i < count; i++) {
      const item = { id: `fc_${randomBytes(16).toString('hex')}`, type: 'function_call', status: 'completed', arguments: args, call_id: `call_${randomUUID()}`, name: tool.name };
      if (tool.namespace) item.namespace = tool.namespace;
      items.push({ item, text: args });
      words += countWords(args);
    }
    return { ...common, items, status: 'completed', usage: responsesUsage(input, cached, words + reasoningTokens, reasoningTokens) };
  }

  // After a tool ran, the fake answers with what it returned.
  const echo = last?.type === 'function_call_output' && d.reply === undefined
    ? `Tool output: ${typeof last.output === 'string' ? last.output : responsesTextOf(last.output)}`
    : answerText(d, userText, ex.endpoint);
  const format = body.text?.format;
  const structured = structuredAnswer(
    format?.type === 'json_schema' ? { type: 'json_schema', json_schema: { name: format.name, schema: format.schema } } : format,
    echo,
  );
  if (structured?.error) return structured.error;
  const { text, finish } = structured !== null ? { text: structured, finish: 'stop' } : limitWords(echo, body.max_output_tokens);
  const status = finish === 'length' ? 'incomplete' : 'completed';
  const content = [{ type: 'output_text', annotations: [], logprobs: [], text }];
  const item = { id: `msg_${randomBytes(16).toString('hex')}`, type: 'message', status, content, role: 'assistant' };
  items.push({ item, text });
  return { ...common, items, status, usage: responsesUsage(input, cached, countWords(text) + reasoningTokens, reasoningTokens) };
}

// GPT-5 and the Codex models always reason (gpt-oss is not served here).
function endpointReasons(endpoint) {
  return endpoint.includes('gpt-5') || endpoint.includes('codex');
}

// The first function tool, also inside a namespace (Codex's MCP tools).
function firstResponsesTool(tools) {
  for (const tool of Array.isArray(tools) ? tools : []) {
    if (tool?.type === 'function' && tool.name) return { name: tool.name, parameters: tool.parameters };
    if (tool?.type === 'namespace') {
      const inner = (tool.tools ?? []).find((t) => t?.type === 'function' && t.name);
      if (inner) return { name: inner.name, parameters: inner.parameters, namespace: tool.name };
    }
  }
  return null;
}

function responsesUsage(input, cached, output, reasoning) {
  return {
    input_tokens: input,
    input_tokens_details: { cached_tokens: cached },
    output_tokens: output,
    output_tokens_details: { reasoning_tokens: reasoning },
    total_tokens: input + output,
  };
}

// The Response object, with the request's parameters as OpenAI echoes them.
function responseObject(ex, a, status, items, usage) {
  const b = ex.body;
  const or = (v, fallback) => (v === undefined || v === null ? fallback : v);
  return {
    id: a.id, object: 'response', created_at: a.createdAt, status, background: false,
    error: status === 'failed' ? { code: 'server_error', message: 'Model execution failed mid-stream.' } : null,
    incomplete_details: status === 'incomplete' ? { reason: 'max_output_tokens' } : null,
    instructions: or(b.instructions, null), max_output_tokens: or(b.max_output_tokens, null), model: a.model,
    output: items.map((i) => i.item ?? i), parallel_tool_calls: or(b.parallel_tool_calls, true), previous_response_id: null,
    reasoning: { effort: or(b.reasoning?.effort, endpointReasons(ex.endpoint) ? 'medium' : null), summary: or(b.reasoning?.summary, null) },
    store: false, temperature: or(b.temperature, 1), text: or(b.text, { format: { type: 'text' } }),
    tool_choice: or(b.tool_choice, 'auto'), tools: or(b.tools, []), top_p: or(b.top_p, 1), truncation: or(b.truncation, 'disabled'),
    usage: ex.d.usage === 'none' ? null : usage, user: or(b.user, null), metadata: or(b.metadata, {}),
  };
}

// The stream as a list of events (without sequence numbers); `content: true` marks the deltas
// truncate/reset-mid/error-mid count.
function responseEvents(ex, a) {
  const events = [];
  const push = (type, fields, content = false) => events.push({ content, data: { type, ...fields } });
  const inProgress = responseObject(ex, a, 'in_progress', [], null);
  push('response.created', { response: { ...inProgress, usage: null } });
  push('response.in_progress', { response: { ...inProgress, usage: null } });
  const chunks = ex.d.chunks ?? DEFAULT_CHUNKS;
  a.items.forEach(({ item, text }, index) => {
    const ids = { item_id: item.id, output_index: index };
    if (item.type === 'reasoning') {
      push('response.output_item.added', { output_index: index, item: { ...item, summary: [] } });
      if (item.summary.length > 0) {
        const part = { type: 'summary_text', text: '' };
        push('response.reasoning_summary_part.added', { ...ids, summary_index: 0, part });
        for (const piece of splitPieces(text, chunks)) push('response.reasoning_summary_text.delta', { ...ids, summary_index: 0, delta: piece });
        push('response.reasoning_summary_text.done', { ...ids, summary_index: 0, text });
        push('response.reasoning_summary_part.done', { ...ids, summary_index: 0, part: { ...part, text } });
      }
    } else if (item.type === 'message') {
      push('response.output_item.added', { output_index: index, item: { ...item, status: 'in_progress', content: [] } });
      const part = { type: 'output_text', annotations: [], logprobs: [], text: '' };
      push('response.content_part.added', { ...ids, content_index: 0, part });
      for (const piece of splitPieces(text, chunks)) push('response.output_text.delta', { ...ids, content_index: 0, delta: piece, logprobs: [] }, true);
      push('response.output_text.done', { ...ids, content_index: 0, text, logprobs: [] });
      push('response.content_part.done', { ...ids, content_index: 0, part: { ...part, text } });
    } else {
      push('response.output_item.added', { output_index: index, item: { ...item, status: 'in_progress', arguments: '' } });
      for (const piece of splitPieces(item.arguments, chunks)) push('response.function_call_arguments.delta', { ...ids, delta: piece }, true);
      push('response.function_call_arguments.done', { ...ids, name: item.name, arguments: item.arguments });
    }
    push('response.output_item.done', { output_index: index, item });
  });
  const final = a.status === 'incomplete' ? 'response.incomplete' : 'response.completed';
  push(final, { response: responseObject(ex, a, a.status, a.items, a.usage) });
  return events;
}

async function streamResponseEvents(ex, a) {
  const { d, res } = ex;
  if (ex.closed) return;
  const events = responseEvents(ex, a);
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
  res.flushHeaders();
  ex.eol = d['sse-crlf'] ? '\r\n' : '\n';
  const stopAt = d.truncate || d['reset-mid'] || d['error-mid'] ? cutPoint(events) : -1;
  let contentSent = 0;
  let sequence = 0;
  const write = (data) => writeNamedEvent(ex, data.type, JSON.stringify({ ...data, sequence_number: sequence++ }));
  for (let i = 0; i < events.length; i++) {
    const event = events[i];
    if (event.content && contentSent === stopAt) {
      if (d['reset-mid']) return hangUpAfterFlush(ex);
      if (d['error-mid']) {
        const failed = responseObject(ex, a, 'failed', [], null);
        await write({ type: 'response.failed', response: failed });
      }
      return res.end(); // truncate: the stream ends with no response.completed
    }
    if (i > 0 && !(await pause(ex, d.spacing))) return;
    if (!(await write(event.data))) return;
    if (event.content) contentSent += 1;
    if (i === 0 && d.malformed && !(await writeNamedEvent(ex, 'response.output_text.delta', MALFORMED_EVENT))) return;
  }
  if (ex.record) ex.record.usage = ex.d.usage === 'none' ? null : a.usage;
  if (!ex.closed) res.end();
}

// One `event:` + `data:` event; resolves false when the client is gone.
async function writeNamedEvent(ex, type, data) {
  if (ex.closed) return false;
  const event = `event: ${type}${ex.eol}data: ${data}${ex.eol}${ex.eol}`;
  if (!ex.d['sse-split']) {
    ex.res.write(event);
    return true;
  }
  const bytes = Buffer.from(event);
  const middle = bytes.length >> 1;
  ex.res.write(bytes.subarray(0, middle));
  if (!(await pause(ex, SPLIT_PAUSE_MS))) return false;
  ex.res.write(bytes.subarray(middle));
  return true;
}

// ------------------------------------------------------------------------------ answering

function sendResult(ex, payload) {
  if (ex.d.malformed) return send(ex, 200, 'application/json', MALFORMED_BODY);
  const text = JSON.stringify(payload);
  if (ex.d.truncate) {
    // No content-length: the body simply ends early, as if the upstream gave up mid-write.
    if (ex.closed) return;
    ex.res.writeHead(200, { 'content-type': 'application/json' });
    ex.res.end(text.slice(0, text.length >> 1));
    return;
  }
  if (ex.record) ex.record.usage = payload.usage ?? null;
  send(ex, 200, 'application/json', text);
}

function send(ex, status, type, text, headers = {}) {
  if (ex.closed) return;
  ex.res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(text), ...headers });
  ex.res.end(text);
}

async function streamEvents(ex, events) {
  const { d, res } = ex;
  if (ex.closed) return;
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
  res.flushHeaders();
  ex.eol = d['sse-crlf'] ? '\r\n' : '\n';

  const stopAt = d.truncate || d['reset-mid'] || d['error-mid'] ? cutPoint(events) : -1;
  let contentSent = 0;
  for (let i = 0; i < events.length; i++) {
    const event = events[i];
    if (event.content && contentSent === stopAt) {
      if (d['reset-mid']) return hangUpAfterFlush(ex);
      if (d['error-mid']) {
        // Model execution failed after some output: an error event, and the stream ends.
        await writeEvent(ex, JSON.stringify({ error_code: 'INTERNAL_ERROR', message: 'Model execution failed mid-stream.' }));
        return res.end();
      }
      return res.end(); // truncate: a clean end with no finish_reason and no [DONE]
    }
    if (i > 0 && !(await pause(ex, d.spacing))) return;
    if (!(await writeEvent(ex, JSON.stringify(event.chunk)))) return;
    if (ex.record) ex.record.usage = event.chunk.usage ?? null;
    if (event.content) contentSent += 1;
    if (i === 0 && d.malformed && !(await writeEvent(ex, MALFORMED_EVENT))) return;
  }
  if (!d['no-done'] && !(await writeEvent(ex, '[DONE]'))) return;
  if (!ex.closed) res.end();
}

// After two content chunks, but always before the one carrying finish_reason.
function cutPoint(events) {
  const total = events.reduce((n, event) => n + (event.content ? 1 : 0), 0);
  return Math.max(0, Math.min(2, total - 1));
}

// Resolves false when the client is gone, so the caller stops writing. `name` gives the event
// an `event:` line (Anthropic's streams name every event).
async function writeEvent(ex, data, name = null) {
  if (ex.closed) return false;
  const event = `${name === null ? '' : `event: ${name}${ex.eol}`}data: ${data}${ex.eol}${ex.eol}`;
  if (!ex.d['sse-split']) {
    ex.res.write(event);
    ex.record?.eventsWritten.push({ at: performance.now(), data });
    return true;
  }
  // Split by bytes, not characters: a multi-byte character may straddle the two reads.
  const bytes = Buffer.from(event);
  const middle = bytes.length >> 1;
  ex.res.write(bytes.subarray(0, middle));
  if (!(await pause(ex, SPLIT_PAUSE_MS))) return false;
  ex.res.write(bytes.subarray(middle));
  return true;
}

// A timer the exchange cancels when the client goes away. Resolves true if still connected.
function pause(ex, ms) {
  if (ex.closed) return Promise.resolve(false);
  if (!ms) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      ex.timers.delete(cancel);
      resolve(!ex.closed);
    }, ms);
    const cancel = () => {
      clearTimeout(timer);
      ex.timers.delete(cancel);
      resolve(false);
    };
    ex.timers.add(cancel);
  });
}

// The fake itself drops the connection: not counted as a client abort.
function hangUp(ex) {
  ex.hungUp = true;
  ex.req.socket.destroy();
}

// Same, once what was already written has reached the kernel: destroy() alone would discard
// queued chunks, and the client must see them before the connection dies.
function hangUpAfterFlush(ex) {
  ex.hungUp = true;
  const { socket } = ex.req;
  socket.write('', () => socket.destroy());
}

// ------------------------------------------------------------------------------ text helpers

function answerText(d, userText, endpoint) {
  if (d.reply !== undefined) return d.reply;
  return userText ? `Echo: ${userText}` : `Hello from ${endpoint}!`;
}

// Applies `max_tokens` (one token per word here).
function limitWords(text, maxTokens) {
  if (!Number.isInteger(maxTokens) || maxTokens < 1) return { text, finish: 'stop' };
  const words = text.split(' ');
  if (words.length <= maxTokens) return { text, finish: 'stop' };
  return { text: words.slice(0, maxTokens).join(' '), finish: 'length' };
}

// Splits into at most n non-empty pieces on word boundaries (a piece keeps its leading space),
// so that the pieces concatenate to the text. With fewer words than n, splits by characters
// instead, so that a test asking for n chunks gets n chunks.
function splitPieces(text, n) {
  const words = text.match(/\s*\S+/g) ?? [];
  const units = words.length >= n ? words : Array.from(text);
  const count = Math.max(1, Math.min(n, units.length));
  const pieces = [];
  for (let i = 0; i < count; i++) {
    const from = Math.floor((i * units.length) / count);
    const to = Math.floor(((i + 1) * units.length) / count);
    pieces.push(units.slice(from, to).join(''));
  }
  return pieces;
}

// `cache` ({read, creation}, Claude on the chat route): tokens of the prompt, which
// `prompt_tokens` includes (databricks.md).
function usageOf(prompt, completion, reasoningTokens, cache = null) {
  const usage = { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion };
  if (reasoningTokens !== undefined) usage.completion_tokens_details = { reasoning_tokens: reasoningTokens };
  if (cache) {
    usage.cache_creation_input_tokens = cache.creation;
    usage.cache_read_input_tokens = cache.read;
  }
  return usage;
}

function countWords(text) {
  return text.match(/\S+/g)?.length ?? 0;
}

function collapse(text) {
  return text.replace(/\s+/g, ' ').trim();
}

function stringList(value) {
  if (typeof value === 'string') return [value];
  if (Array.isArray(value) && value.length > 0 && value.every((v) => typeof v === 'string')) return value;
  return null;
}

function servedName(ex) {
  return `${ex.endpoint}${ex.state.servedSuffix}`;
}

function nowSeconds() {
  return Math.floor(Date.now() / 1000);
}

// ------------------------------------------------------------------------------ CLI

const USAGE =
  'usage: node tests/fake-databricks.mjs [--port 4010] [--host 127.0.0.1] [--token dapi-...] [--served-suffix -served]\n' +
  '         [--oauth-client-id ID --oauth-client-secret SECRET [--oauth-expires-in 3600]]';

function parseArgs(argv) {
  // No recording: a long `make dev` session would otherwise keep every request in memory.
  const options = { port: 4010, host: '127.0.0.1', record: false };
  const names = {
    '--port': 'port', '--host': 'host', '--token': 'token', '--served-suffix': 'servedSuffix',
    '--oauth-client-id': 'clientId', '--oauth-client-secret': 'clientSecret', '--oauth-expires-in': 'expiresIn',
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const eq = arg.indexOf('=');
    const flag = eq === -1 ? arg : arg.slice(0, eq);
    if (!names[flag]) throw new Error(`unknown argument '${arg}'\n${USAGE}`);
    const value = eq === -1 ? argv[++i] : arg.slice(eq + 1);
    if (value === undefined) throw new Error(`missing value for ${flag}\n${USAGE}`);
    options[names[flag]] = value;
  }
  const port = Number(options.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`bad port '${options.port}'\n${USAGE}`);
  options.port = port;
  return withOAuth(options);
}

// Moves the OAuth flags into `options.oauth`; half a client is a mistake, not "no OAuth".
function withOAuth(options) {
  const { clientId, clientSecret, expiresIn, ...rest } = options;
  if (clientId === undefined && clientSecret === undefined) {
    if (expiresIn !== undefined) throw new Error(`--oauth-expires-in needs --oauth-client-id and --oauth-client-secret\n${USAGE}`);
    return rest;
  }
  if (!clientId || !clientSecret) throw new Error(`OAuth needs both --oauth-client-id and --oauth-client-secret\n${USAGE}`);
  if (expiresIn !== undefined && !/^\d+$/.test(expiresIn)) throw new Error(`bad --oauth-expires-in '${expiresIn}'\n${USAGE}`);
  return { ...rest, oauth: { clientId, clientSecret, expiresIn: expiresIn === undefined ? 3600 : Number(expiresIn) } };
}

async function main(argv) {
  const options = parseArgs(argv);
  const fake = await startFakeDatabricks(options);
  process.stdout.write(`fake databricks listening on ${fake.url}\n`);
  if (options.oauth) process.stdout.write(`OAuth M2M tokens at ${fake.workspaceUrl}${TOKEN_PATH}\n`);
  const stop = () => fake.close().then(() => process.exit(0));
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

function isMain() {
  return Boolean(process.argv[1]) && import.meta.url === pathToFileURL(process.argv[1]).href;
}

if (isMain()) {
  main(process.argv.slice(2)).catch((err) => {
    process.stderr.write(`${err.message}\n`);
    process.exit(err.code === 'EADDRINUSE' ? 1 : 2);
  });
}
