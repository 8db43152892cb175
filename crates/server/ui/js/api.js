// JSON client for gpuwarden's /api/v1. API errors ({"error": {"code", "message"}}) are
// thrown as ApiError carrying the server's message, which the pages show to the user.

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// With authentication on, the UI signs in with a token and then carries a session cookie
// (HttpOnly: this script never sees it); changes made with it must send the session's
// CSRF token, which sign-in and /api/v1/auth/whoami return.
let csrfToken = null;

async function call(method, path, body) {
  const init = { method, headers: { accept: 'application/json' }, credentials: 'same-origin' };
  // Every state-changing call says JSON, even without a body: the server refuses changes
  // without it (what a page of another origin cannot send without a CORS preflight).
  if (method !== 'GET' && method !== 'HEAD') {
    init.headers['content-type'] = 'application/json';
    if (csrfToken) init.headers['x-csrf-token'] = csrfToken;
  }
  if (body !== undefined) {
    init.headers['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, 'unreachable', `gpuwarden is not answering (${e.message})`);
  }
  let data = null;
  try {
    data = await resp.json();
  } catch {
    // Not JSON: reported below with the HTTP status.
  }
  if (!resp.ok) {
    const err = data && data.error;
    throw new ApiError(resp.status, err?.code ?? 'http', err?.message ?? `${method} ${path}: HTTP ${resp.status}`);
  }
  return data;
}

/** Builds a query string, leaving out empty values. */
export function qs(params) {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v != null && v !== '') p.set(k, v);
  const s = p.toString();
  return s ? `?${s}` : '';
}

export const get = (path) => call('GET', path);
export const post = (path, body) => call('POST', path, body);

/** Who the UI is signed in as; remembers the session's CSRF token. 401: sign-in needed. */
export async function whoami() {
  const me = await get('/api/v1/auth/whoami');
  csrfToken = me.csrf_token ?? null;
  return me;
}

/** Signs in with an API token (the server answers with a session cookie). */
export async function signIn(token) {
  const s = await post('/api/v1/auth/session', { token });
  csrfToken = s.csrf_token;
  return s;
}

/** How one can sign in here: `{ enabled, token, oidc?: { name, login_url } }` (public). */
export const signInMethods = () => get('/api/v1/auth/methods');

export async function signOut() {
  try {
    await post('/api/v1/auth/session/logout');
  } finally {
    csrfToken = null;
  }
}

export const api = {
  summary: () => get('/api/v1/fleet/summary'),
  gpus: () => get('/api/v1/gpus?limit=10000'),
  gpu: (uuid) => get(`/api/v1/gpus/${encodeURIComponent(uuid)}`),
  series: (uuid, field, from = '-1h') =>
    get(`/api/v1/gpus/${encodeURIComponent(uuid)}/series${qs({ field, from, max_points: 500 })}`),
  events: (uuid, from = '-24h') => get(`/api/v1/gpus/${encodeURIComponent(uuid)}/events${qs({ from })}`),
  healthHistory: (uuid) => get(`/api/v1/gpus/${encodeURIComponent(uuid)}/health/history?from=-1h`),
  // Failure prediction: the whole fleet's latest scores in one call (for the tiles), one
  // GPU's latest score with its history (for its page).
  predictions: () => get('/api/v1/predictions'),
  gpuPredictions: (uuid) => get(`/api/v1/gpus/${encodeURIComponent(uuid)}/predictions`),
  incidents: (filters) => get(`/api/v1/incidents${qs({ limit: 200, ...filters })}`),
  incident: (id) => get(`/api/v1/incidents/${encodeURIComponent(id)}`),
  ack: (id, comment) => post(`/api/v1/incidents/${encodeURIComponent(id)}/ack`, { actor: 'ui', comment }),
  // The audit trail (admins): filters action, actor, result; `before` is the page cursor.
  audit: (filters) => get(`/api/v1/audit${qs(filters)}`),
  resolve: (id, comment) => post(`/api/v1/incidents/${encodeURIComponent(id)}/resolve`, { actor: 'ui', comment }),
};
