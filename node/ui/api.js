// The page's side of the control API.
//
// The session token lives only in this module's memory: not in a cookie, nor in the
// browser's local or session storage. Closing or reloading the tab ends the session; run
// `vouchnet ui` for a new link. Every call sends it as a bearer token, which a request
// forged by another site cannot carry.

let session = null;

/** An error answer of the API: `kind` is the stable identifier of docs/cli.md. */
export class ApiError extends Error {
  constructor(status, kind, message) {
    super(message);
    this.status = status;
    this.kind = kind;
  }
}

async function errorOf(resp) {
  let body = null;
  try {
    body = await resp.json();
  } catch {
    // Not JSON: fall back to the status line.
  }
  const kind = body?.error?.kind ?? 'http_' + resp.status;
  const message = body?.error?.message ?? `${resp.status} ${resp.statusText}`;
  return new ApiError(resp.status, kind, message);
}

/** Trades the one-time login token for a session. */
export async function login(oneTimeToken) {
  const resp = await fetch('/ui/login', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ token: oneTimeToken }),
    cache: 'no-store',
    credentials: 'omit',
  });
  if (!resp.ok) throw await errorOf(resp);
  session = (await resp.json()).session;
}

async function call(method, path, body) {
  if (session == null) throw new ApiError(401, 'unauthorized', 'not logged in');
  let resp;
  try {
    resp = await fetch(path, {
      method,
      headers: {
        Authorization: `Bearer ${session}`,
        ...(body === undefined ? {} : { 'Content-Type': 'application/json' }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
      credentials: 'omit',
    });
  } catch (e) {
    throw new ApiError(0, 'offline', 'the node cannot be reached');
  }
  if (!resp.ok) throw await errorOf(resp);
  return resp.json();
}

/** `GET path`. */
export const get = (path) => call('GET', path);

/** `POST /v1/actions/{name}`. */
export const action = (name, params = {}) =>
  call('POST', `/v1/actions/${encodeURIComponent(name)}`, params);

/**
 * Follows the event stream once: `onOpen` is awaited as soon as the node has subscribed
 * this page (so a snapshot loaded there misses no event: later events wait in the stream)
 * and stops it by returning false; then `onEvent` gets every event in order. Resolves with why it ended: `unauthorized`,
 * `lagged` (this page fell behind; load everything again), or `closed`.
 *
 * Server-Sent Events are read with `fetch` rather than `EventSource`, so the session token
 * travels in a header and never in a URL.
 */
export async function followEvents({ onOpen, onEvent }) {
  let resp;
  try {
    resp = await fetch('/v1/events', {
      headers: { Authorization: `Bearer ${session}`, Accept: 'text/event-stream' },
      cache: 'no-store',
      credentials: 'omit',
    });
  } catch {
    return 'closed';
  }
  if (resp.status === 401) return 'unauthorized';
  if (!resp.ok || !resp.body) return 'closed';
  if (!(await onOpen())) {
    resp.body.cancel().catch(() => {});
    return 'closed';
  }
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return 'closed';
      buf += decoder.decode(value, { stream: true });
      let end;
      while ((end = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, end);
        buf = buf.slice(end + 2);
        const data = block
          .split('\n')
          .filter((l) => l.startsWith('data:'))
          .map((l) => l.slice(5).replace(/^ /, ''))
          .join('\n');
        if (data === '') continue; // keep-alive comment
        let ev;
        try {
          ev = JSON.parse(data);
        } catch {
          continue;
        }
        if (ev.type === 'Lagged') return 'lagged';
        onEvent(ev);
      }
    }
  } catch {
    return 'closed';
  }
}
