// The gateway's API as the admin page uses it: the session (the key, kept in sessionStorage and
// sent as a header, never a cookie) and one `api` call that turns every failure into an Error
// whose message a person can act on (the API's own `error.message` when there is one).

const SESSION = 'gateway-admin-session';

/** @returns {{ key: string, role: 'master' | 'key' } | null} */
export function session() {
  try {
    const s = JSON.parse(sessionStorage.getItem(SESSION) || 'null');
    return s && typeof s.key === 'string' && (s.role === 'master' || s.role === 'key') ? s : null;
  } catch {
    return null;
  }
}

export function saveSession(key, role) {
  sessionStorage.setItem(SESSION, JSON.stringify({ key, role }));
}

export function clearSession() {
  sessionStorage.removeItem(SESSION);
}

export class ApiError extends Error {
  constructor(message, status, param) {
    super(message);
    this.status = status;
    this.param = param;
  }
}

/**
 * Calls the gateway. `body` (an object) is sent as JSON with POST; `query` is added to the URL
 * (empty values left out). `key` overrides the session's (for signing in).
 */
export async function api(path, { body, query, key, method } = {}) {
  const auth = key ?? session()?.key;
  const url = new URL(path, location.origin);
  for (const [name, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== '') url.searchParams.set(name, String(value));
  }
  const headers = {};
  if (auth) headers.authorization = `Bearer ${auth}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  let res;
  try {
    res = await fetch(url, {
      method: method || (body !== undefined ? 'POST' : 'GET'),
      headers,
      body: body !== undefined ? JSON.stringify(body) : undefined,
      credentials: 'omit',
      cache: 'no-store',
    });
  } catch {
    throw new ApiError('Cannot reach the gateway. Check the network and try again.', 0);
  }
  const text = await res.text();
  let json;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = undefined;
  }
  if (!res.ok) {
    const e = json && json.error;
    const message = (e && (e.message || (typeof e === 'string' ? e : ''))) || `The gateway answered ${res.status}.`;
    throw new ApiError(message, res.status, e && e.param);
  }
  if (json === undefined) throw new ApiError(`The gateway's answer to ${path} is not JSON.`, res.status);
  return json;
}

/** Whether the gateway serves a route (an unknown one answers 404 "Unknown route"). */
export function isMissingRoute(error) {
  return error instanceof ApiError && error.status === 404 && /^Unknown route/.test(error.message);
}
