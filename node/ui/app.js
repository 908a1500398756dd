// The vouchnet page: what the node knows, and the questions only its user can answer.
//
// Model (the design's UI model): the page holds resources — devices, pairings in progress,
// vouching sessions — loaded once and then kept current by the event stream's
// ResourceChanged / ResourceDeleted events, and prompts — pairing codes to compare,
// devices to vouch to, vouches to accept — that arrive as events. Nothing about a session
// is polled: its per-target statuses change when the node says so. The one list refreshed
// on a timer is "nearby devices", which has no events.
//
// Rendering: each section is rebuilt from the state when it changed; keyboard focus is
// kept on the same control (by its data-key) across a rebuild.

import * as api from './api.js';
import { h, fill, shortId, groupCode, fmtTime, fmtLeft } from './dom.js';
import { fingerprintOf } from './fingerprint.js';

const $ = (id) => document.getElementById(id);

const state = {
  /** connecting | live | reconnecting | stopped | ended | no-login | login-failed */
  conn: 'connecting',
  connMessage: '',
  /** Why the node stopped on its own (its `NodeStopped` event), shown until it is back. */
  stopped: null,
  me: null,
  devices: new Map(),
  peers: [],
  /** device id → pairing in progress (the API's view plus what this page knows). */
  pairings: new Map(),
  sessions: new Map(),
  /** session id → "choose who to vouch to" prompt. */
  ready: new Map(),
  /** prompt id → "accept this vouch?" prompt. */
  proxy: new Map(),
  audit: [],
  /** Texts received (`GET /v1/inbox`), oldest first. */
  messages: [],
  /** Each device's trust chain (`GET /v1/audit/chains`), or null where the node has none. */
  chains: null,
  verify: null,
  auditError: null,
  /** Every device name this page has seen, so a device keeps its name after it is gone. */
  names: new Map(),
  /** Keys of actions in flight: their buttons are disabled. */
  busy: new Set(),
  /** The device whose "Unpair" waits for a second confirmation. */
  unpairAsk: null,
  showAllAudit: false,
};

// ----------------------------------------------------------------------------------------
// Rendering

const SECTIONS = {
  header: renderHeader,
  prompts: renderPrompts,
  devices: renderDevices,
  nearby: renderNearby,
  sessions: renderSessions,
  messages: renderMessages,
  audit: renderAudit,
};
const dirty = new Set();
let renderQueued = false;

function changed(...sections) {
  for (const s of sections) dirty.add(s);
  if (!renderQueued) {
    renderQueued = true;
    queueMicrotask(render);
  }
}

function changedAll() {
  changed(...Object.keys(SECTIONS));
}

/** Whether the user had no control focused when this render started. */
let userIdle = true;

function render() {
  renderQueued = false;
  const active = document.activeElement;
  const focusKey = active?.dataset?.key;
  userIdle = !active || active === document.body;
  for (const s of dirty) SECTIONS[s]();
  dirty.clear();
  if (focusKey && !document.activeElement?.dataset?.key) {
    const again = document.querySelector(`[data-key="${CSS.escape(focusKey)}"]`);
    if (again) again.focus();
  }
  document.body.dataset.conn = state.conn;
  $('main').hidden = !['live', 'reconnecting', 'stopped'].includes(state.conn);
  // While the node is unreachable nothing can be changed (the generated controls check
  // `isBusy`; these are the page's fixed ones).
  for (const c of document.querySelectorAll('[data-needs-node]')) c.disabled = !live();
}

const live = () => state.conn === 'live';
const isBusy = (key) => state.busy.has(key) || !live();

function nameOf(id) {
  if (state.me && id === state.me.device_id) return `${state.me.name} (this device)`;
  return state.devices.get(id)?.name ?? state.pairings.get(id)?.name ?? state.names.get(id) ?? shortId(id);
}

function learnName(id, name) {
  if (typeof id === 'string' && typeof name === 'string' && name) state.names.set(id, name);
}

const capitalize = (t) => t.charAt(0).toUpperCase() + t.slice(1);

let toastTimer = null;
function toast(text, kind = 'info') {
  // The live region stays in the page (hidden only by CSS when empty), so screen
  // readers announce each new text.
  const t = $('toast');
  t.textContent = text;
  t.dataset.kind = kind;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => {
    t.textContent = '';
  }, 8000);
}

/** Runs an action once at a time per `key`, showing failures. */
async function run(key, what, sections, fn) {
  if (state.busy.has(key)) return undefined;
  state.busy.add(key);
  changed(...sections);
  try {
    return await fn();
  } catch (e) {
    toast(`${what} failed: ${e.message}`, 'error');
    return undefined;
  } finally {
    state.busy.delete(key);
    changed(...sections);
  }
}

const CONN_TEXT = {
  connecting: 'Connecting to the node…',
  live: 'Connected to the node',
  reconnecting: 'Offline: the node cannot be reached. Trying again… Nothing can be changed until it is back.',
  stopped: 'The node stopped: it could not save a change to its disk. Nothing it confirmed is lost. Nothing can be changed until it runs again.',
  ended: 'This session has ended (the node restarted, or the session expired). Run `vouchnet ui` on this device for a new link.',
  'no-login': 'To use this page, run `vouchnet ui` on this device and open the link it prints.',
  'login-failed': 'This login link cannot be used.',
};

function renderHeader() {
  const me = state.me;
  $('me-name').textContent = me ? me.name : '';
  fill(
    $('me-detail'),
    me ? ['Device ', h('code', { title: me.device_id }, shortId(me.device_id)), ' · fingerprint ', h('code', {}, me.fingerprint)] : '',
  );
  const conn = $('conn');
  conn.dataset.state = state.conn;
  const text = state.connMessage ? `${CONN_TEXT[state.conn]} ${state.connMessage}` : CONN_TEXT[state.conn];
  // `command` in a message is shown as code.
  fill(conn, text.split('`').map((part, i) => (i % 2 ? h('code', {}, part) : part)));
}

// ---- prompts ---------------------------------------------------------------------------

const FAIL_TEXT = {
  user_rejected: 'declined on this device',
  code_mismatch: 'the codes were different — nothing was stored',
  timeout: 'expired: no answer in time',
  connection_lost: 'the connection was lost',
  aborted: 'cancelled',
  commitment_mismatch: 'the other device broke the key exchange (possible attack)',
  key_confirmation_failed: 'the keys did not match (possible attack)',
  invalid_key_exchange: 'invalid key exchange',
  storage: 'this device could not store the pairing',
};

function failText(reason) {
  if (typeof reason !== 'string') return 'failed';
  if (reason.startsWith('cancelled_by_peer:')) {
    const why = reason.slice('cancelled_by_peer:'.length);
    return why === 'user_rejected' ? 'declined on the other device' : `cancelled by the other device (${why})`;
  }
  return FAIL_TEXT[reason] ?? reason;
}

/** What a pairing card shows: working, confirm, waiting, failed or expired. */
function pairingStatus(p) {
  if (p.failed) return p.failed === 'timeout' ? 'expired' : 'failed';
  if (p.deadline && Date.now() >= p.deadline) return 'expired';
  if (p.stage === 'awaiting_peer_confirmation' || p.confirmed) return 'waiting';
  if (p.code && p.stage === 'awaiting_user') return 'confirm';
  return 'working';
}

function deadlineText(deadline) {
  if (typeof deadline !== 'number') return 'no deadline given';
  return h('span', { class: 'remaining', dataset: { deadline: String(deadline) } }, fmtLeft(deadline));
}

function pairingCard(p) {
  const id = p.device_id;
  const name = p.name ?? nameOf(id);
  const status = pairingStatus(p);
  const hid = `pair-h-${id}`;
  const body = [];
  let heading;
  if (status === 'working') {
    heading = p.direction === 'inbound' ? `${name} asks to pair` : `Asking ${name} to pair…`;
    body.push(h('p', {}, 'Exchanging keys. A code appears here in a moment.'));
    body.push(
      h('div', { class: 'actions' },
        h('button', {
          type: 'button', class: 'secondary', dataset: { key: `cancel:${id}` }, disabled: isBusy(`pair:${id}`),
          onclick: () => answerPairing(id, false),
        }, 'Cancel'),
      ),
    );
  } else if (status === 'confirm' || status === 'waiting') {
    heading = p.direction === 'inbound' ? `${name} wants to pair with this device` : `Pairing with ${name}`;
    body.push(
      h('p', {}, `This device shows the code below. Check that ${name} shows the same code.`),
      h('p', { class: 'code', dataset: { code: p.code ?? '' }, 'aria-label': `Code ${(p.code ?? '').split('').join(' ')}` }, groupCode(p.code)),
    );
    if (status === 'confirm') {
      if (p.peer_confirmed) body.push(h('p', { class: 'note' }, `${name}'s user already confirmed.`));
      body.push(
        h('p', {}, 'Answer before the deadline: ', deadlineText(p.deadline), '.'),
        h('div', { class: 'actions' },
          h('button', {
            type: 'button', class: 'primary', dataset: { key: `match:${id}` }, disabled: isBusy(`pair:${id}`),
            onclick: () => answerPairing(id, true),
          }, 'Codes match'),
          h('button', {
            type: 'button', class: 'danger', dataset: { key: `differ:${id}` }, disabled: isBusy(`pair:${id}`),
            onclick: () => answerPairing(id, false),
          }, 'Codes differ'),
        ),
      );
    } else {
      body.push(
        h('p', { class: 'note', role: 'status' }, `Confirmed here. Waiting for ${name}'s user to confirm too (`, deadlineText(p.deadline), ').'),
      );
    }
  } else {
    heading = status === 'expired' ? `Pairing with ${name} expired` : `Pairing with ${name} failed`;
    body.push(
      h('p', {}, status === 'expired' ? 'No answer in time. Nothing was stored.' : `${capitalize(failText(p.failed))}. Nothing was stored.`),
      h('div', { class: 'actions' },
        h('button', {
          type: 'button', class: 'secondary', dataset: { key: `dismiss-pair:${id}` },
          onclick: () => { state.pairings.delete(id); changed('prompts', 'nearby'); },
        }, 'Dismiss'),
      ),
    );
  }
  return h('article', { class: `prompt pairing ${status}`, 'aria-labelledby': hid, dataset: { pairing: id, status } },
    h('h3', { id: hid, tabindex: '-1', dataset: { key: hid } }, heading),
    body,
  );
}

function candidatesFor(r) {
  const me = state.me?.device_id;
  const ids = r.candidates ?? [...state.devices.values()]
    .filter((d) => d.pairing_type === 'direct' && d.trust_level === 'trusted')
    .map((d) => d.device_id);
  return ids.filter((id) => id !== r.vouchee && id !== me);
}

function readyCard(r) {
  const name = r.vouchee_name ?? nameOf(r.vouchee);
  const hid = `ready-h-${r.id}`;
  const targets = candidatesFor(r);
  const key = `vouch:${r.id}`;
  for (const t of [...r.selected]) if (!targets.includes(t)) r.selected.delete(t);
  const boxes = targets.map((t) => {
    const d = state.devices.get(t);
    const cid = `ready-${r.id}-${t}`;
    return h('div', { class: 'check' },
      h('input', {
        type: 'checkbox', id: cid, checked: r.selected.has(t), dataset: { key: `target:${r.id}:${t}`, target: t },
        onchange: (e) => { if (e.target.checked) r.selected.add(t); else r.selected.delete(t); changed('prompts'); },
      }),
      h('label', { for: cid }, nameOf(t), ' ',
        h('span', { class: 'muted' }, d?.online ? '(online)' : '(offline — the vouch waits in the queue until it is back)')),
    );
  });
  return h('article', { class: 'prompt vouch', 'aria-labelledby': hid, dataset: { vouchSession: r.id, vouchee: r.vouchee ?? '' } },
    h('h3', { id: hid, tabindex: '-1', dataset: { key: hid } }, `Vouch for ${name}?`),
    h('p', {}, `${name} is now paired with this device. Your other devices can trust it too, on this device's word, without pairing with it one by one.`),
    targets.length
      ? h('fieldset', {}, h('legend', {}, 'Vouch to'), boxes)
      : h('p', { class: 'muted' }, 'You have no other trusted, directly paired devices to vouch to.'),
    h('div', { class: 'actions' },
      targets.length ? [
        h('button', {
          type: 'button', class: 'primary', dataset: { key: `vouch-some:${r.id}` }, disabled: isBusy(key) || r.selected.size === 0,
          onclick: () => vouch(r, false),
        }, r.selected.size ? `Vouch (${r.selected.size})` : 'Vouch'),
        h('button', {
          type: 'button', class: 'secondary', dataset: { key: `vouch-all:${r.id}` }, disabled: isBusy(key),
          onclick: () => vouch(r, true),
        }, 'Vouch to all'),
      ] : null,
      h('button', {
        type: 'button', class: 'secondary', dataset: { key: `not-now:${r.id}` },
        onclick: () => { r.dismissed = true; changed('prompts', 'sessions'); },
      }, 'Not now'),
    ),
  );
}

function proxyCard(q) {
  const hid = `proxy-h-${q.id}`;
  const voucher = q.voucher_name ?? nameOf(q.voucher);
  const vouchee = q.vouchee_name ?? shortId(q.vouchee);
  const expired = q.expired || (q.deadline && Date.now() >= q.deadline);
  const key = `proxy:${q.id}`;
  return h('article', { class: `prompt proxy${expired ? ' expired' : ''}`, 'aria-labelledby': hid, dataset: { proxyId: q.id, status: expired ? 'expired' : 'open' } },
    h('h3', { id: hid, tabindex: '-1', dataset: { key: hid } }, `${voucher} vouches for ${vouchee}`),
    h('p', {}, `${voucher}, a device you paired with directly, says ${vouchee} is one of your devices. Accept it only if you expect this device.`),
    h('dl', {},
      h('dt', {}, 'Device'), h('dd', {}, vouchee, ' ', h('code', { title: q.vouchee }, shortId(q.vouchee))),
      h('dt', {}, 'Fingerprint'), h('dd', {}, h('code', { class: 'fingerprint' }, q.fingerprint ?? '—')),
      h('dt', {}, 'Vouched by'), h('dd', {}, voucher, ' ', h('code', { title: q.voucher }, shortId(q.voucher))),
      h('dt', {}, 'Answer before'), h('dd', {}, q.deadline ? [fmtTime(q.deadline), ' (', deadlineText(q.deadline), ')'] : '—'),
    ),
    expired
      ? [h('p', { class: 'note' }, 'Expired: nothing was stored.'),
        h('div', { class: 'actions' }, h('button', {
          type: 'button', class: 'secondary', dataset: { key: `dismiss-proxy:${q.id}` },
          onclick: () => { state.proxy.delete(q.id); changed('prompts'); },
        }, 'Dismiss'))]
      : h('div', { class: 'actions' },
        h('button', {
          type: 'button', class: 'primary', dataset: { key: `proxy-accept:${q.id}` }, disabled: isBusy(key),
          onclick: () => confirmProxy(q, true),
        }, 'Accept'),
        h('button', {
          type: 'button', class: 'danger', dataset: { key: `proxy-reject:${q.id}` }, disabled: isBusy(key),
          onclick: () => confirmProxy(q, false),
        }, 'Reject'),
      ),
  );
}

let shownPrompts = new Set();

function renderPrompts() {
  const cards = [
    ...[...state.pairings.values()].map(pairingCard),
    ...[...state.proxy.values()].map(proxyCard),
    ...[...state.ready.values()].filter((r) => !r.dismissed).map(readyCard),
  ];
  fill($('prompt-list'), cards);
  $('prompts-empty').hidden = cards.length > 0;
  // A new question takes the focus only when the user is not busy elsewhere on the page.
  const now = new Set(cards.map((c) => c.getAttribute('aria-labelledby')));
  const fresh = [...now].filter((k) => !shownPrompts.has(k));
  shownPrompts = now;
  if (fresh.length && userIdle) document.getElementById(fresh[0])?.focus();
}

// ---- devices ---------------------------------------------------------------------------

const TRUST = ['trusted', 'unreliable', 'blocked'];

function deviceItem(d) {
  const id = d.device_id;
  const hid = `dev-h-${id}`;
  const sel = `trust-${id}`;
  const asking = state.unpairAsk === id;
  return h('li', { class: 'device card', 'aria-labelledby': hid, dataset: { deviceId: id, online: String(d.online), pairingType: d.pairing_type, trust: d.trust_level, review: String(!!d.review) } },
    h('h3', { id: hid }, d.name),
    h('p', { class: 'badges' },
      h('span', { class: `badge ${d.online ? 'online' : 'offline'}` }, d.online ? 'Online' : 'Offline'),
      h('span', { class: 'badge' }, d.pairing_type === 'proxied' ? 'Proxied' : 'Direct'),
      h('span', { class: `badge trust-${d.trust_level}` }, d.trust_level[0].toUpperCase() + d.trust_level.slice(1)),
    ),
    d.vouched_by ? h('p', { class: 'vouched-by' }, 'Vouched for by ', nameOf(d.vouched_by)) : null,
    d.key_proof_failed ? h('p', { class: 'note key-proof-failed', role: 'note' }, keyProofText(d)) : null,
    h('p', { class: 'muted' }, 'Id ', h('code', { title: id }, shortId(id)), ' · paired ', fmtTime(d.paired_at),
      d.online || !d.last_seen ? '' : ` · last seen ${fmtTime(d.last_seen)}`),
    h('form', {
      class: 'inline', onsubmit: (e) => { e.preventDefault(); setTrust(id, e.target.elements.trust.value); },
    },
      h('label', { for: sel }, 'Trust'),
      h('select', { id: sel, name: 'trust', dataset: { key: `trust-select:${id}` }, disabled: !live() },
        TRUST.map((t) => h('option', { value: t, selected: t === d.trust_level }, t))),
      h('button', { type: 'submit', class: 'secondary', dataset: { key: `trust-apply:${id}` }, disabled: isBusy(`trust:${id}`) }, 'Apply'),
    ),
    d.review
      ? h('div', { class: 'actions confirm review', role: 'group', 'aria-label': `Review ${d.name}` },
        h('p', { class: 'note' }, `The device that vouched for ${d.name} was unpaired. Keep trusting ${d.name}?`),
        h('button', { type: 'button', class: 'primary', dataset: { key: `review-keep:${id}` }, disabled: isBusy(`review:${id}`), onclick: () => review(id, true) }, 'Keep'),
        h('button', { type: 'button', class: 'danger', dataset: { key: `review-remove:${id}` }, disabled: isBusy(`review:${id}`), onclick: () => review(id, false) }, 'Remove'),
      )
      : null,
    asking
      ? h('div', { class: 'actions confirm', role: 'group', 'aria-label': `Confirm unpairing ${d.name}` },
        h('p', {}, `Unpair ${d.name}? It will have to pair directly again.`),
        h('button', { type: 'button', class: 'danger', dataset: { key: `unpair-yes:${id}` }, disabled: isBusy(`unpair:${id}`), onclick: () => unpair(id) }, 'Unpair'),
        h('button', { type: 'button', class: 'secondary', dataset: { key: `unpair-no:${id}` }, onclick: () => { state.unpairAsk = null; changed('devices'); } }, 'Keep'),
      )
      : h('div', { class: 'actions' },
        h('button', { type: 'button', class: 'secondary', dataset: { key: `unpair:${id}` }, onclick: () => { state.unpairAsk = id; changed('devices'); } }, 'Unpair…'),
      ),
  );
}

function renderDevices() {
  const list = [...state.devices.values()].sort((a, b) => a.name.localeCompare(b.name));
  fill($('devices'), list.map(deviceItem));
  $('devices-empty').hidden = list.length > 0;
}

function renderNearby() {
  const list = state.peers.filter((p) => !p.paired && !state.devices.has(p.device_id));
  fill($('nearby'), list.map((p) => {
    const id = p.device_id;
    const pairing = state.pairings.has(id) && !state.pairings.get(id).failed;
    return h('li', { class: 'card peer', dataset: { peer: id } },
      h('span', {}, state.names.has(id) ? `${state.names.get(id)} ` : '', h('code', { title: id }, shortId(id)), ' ',
        h('span', { class: 'muted' }, p.nearby ? 'on this network' : 'connected')),
      h('button', {
        type: 'button', class: 'primary', dataset: { key: `pair:${id}` }, disabled: pairing || isBusy(`pair:${id}`),
        'aria-label': `Pair with ${shortId(id)}`, onclick: () => pairWith(id, null),
      }, pairing ? 'Pairing…' : 'Pair'),
    );
  }));
  $('nearby-empty').hidden = list.length > 0;
}

// ---- sessions --------------------------------------------------------------------------

const SESSION_TEXT = {
  pending: 'Waiting for you to choose devices',
  in_progress: 'In progress',
  completed: 'Completed',
  cancelled: 'Cancelled',
};
const VOUCH_TEXT = {
  selected: 'Chosen',
  waiting: 'Waiting for an answer',
  queued: 'Queued: offline, delivered when it comes back',
  accepted: 'Accepted',
  rejected: 'Rejected',
  expired: 'Expired: never came back in time',
};

function renderSessions() {
  const list = [...state.sessions.values()].sort((a, b) => b.created_at - a.created_at);
  fill($('sessions'), list.map((s) => {
    const hid = `sess-h-${s.id}`;
    const r = state.ready.get(s.id);
    return h('li', { class: `card session ${s.state}`, 'aria-labelledby': hid, dataset: { session: s.id, state: s.state } },
      h('h3', { id: hid }, `Vouching for ${s.vouchee_name}`),
      h('p', { class: 'state', role: 'status' }, SESSION_TEXT[s.state] ?? s.state),
      s.vouches.length
        ? h('ul', { class: 'targets' }, s.vouches.map((v) => h('li', { dataset: { target: v.device_id, status: v.status } },
          h('span', { class: 'target-name' }, nameOf(v.device_id)), ': ',
          h('span', { class: `status ${v.status}` }, VOUCH_TEXT[v.status] ?? v.status, v.reason ? ` (${v.reason})` : ''))))
        : null,
      r && r.dismissed
        ? h('button', { type: 'button', class: 'secondary', dataset: { key: `reopen:${s.id}` }, onclick: () => { r.dismissed = false; changed('prompts', 'sessions'); } }, 'Choose devices…')
        : null,
      h('p', { class: 'muted' }, 'Started ', fmtTime(s.created_at), ' · session ', h('code', {}, s.id.slice(0, 8))),
    );
  }));
  $('sessions-empty').hidden = list.length > 0;
}

// ---- audit -----------------------------------------------------------------------------

function renderMessages() {
  // Any paired device that is not blocked can be written to; online ones first.
  const to = [...state.devices.values()]
    .filter((d) => d.trust_level !== 'blocked')
    .sort((a, b) => Number(b.online) - Number(a.online) || a.name.localeCompare(b.name));
  const select = $('send-to');
  const chosen = select.value;
  fill(select, to.map((d) => h('option', { value: d.device_id, selected: d.device_id === chosen },
    d.online ? d.name : `${d.name} (offline)`)));
  const list = [...state.messages].reverse();
  fill($('messages'), list.map((m) => h('li', { class: 'message' },
    h('span', { class: 'muted' }, `${nameOf(m.from)} · ${fmtTime(m.received_at)}`), ' ', m.text)));
  $('messages-empty').hidden = list.length > 0;
  $('messages-clear').hidden = list.length === 0;
}

function renderAudit() {
  const v = state.verify;
  const box = $('audit-verify');
  if (state.auditError) {
    box.dataset.ok = 'unknown';
    box.textContent = `The audit trail could not be read: ${state.auditError}`;
  } else if (v) {
    box.dataset.ok = String(v.ok);
    box.textContent = v.ok
      ? `Verified: ${v.entries} ${v.entries === 1 ? 'entry' : 'entries'}, the hash chain and signatures are intact.`
      : `Verification FAILED: ${v.error ?? 'unknown error'}`;
  } else {
    box.dataset.ok = 'unknown';
    box.textContent = 'Not verified yet.';
  }
  fill($('chains'), (state.chains ?? []).map(chainItem));
  $('chains-section').hidden = !state.chains || state.chains.length === 0;
  const all = [...state.audit].reverse();
  const shown = state.showAllAudit ? all : all.slice(0, 20);
  fill($('audit'), shown.map((e) => h('li', { dataset: { seq: String(e.seq) } },
    h('span', { class: 'muted' }, `#${e.seq} · ${fmtTime(e.at)}`), ' ', e.event)));
  const more = $('audit-more');
  more.hidden = all.length <= 20;
  more.textContent = state.showAllAudit ? 'Show the latest 20' : `Show all ${all.length}`;
}

const EVIDENCE_TEXT = {
  vouch_certificate: 'vouch signed by',
  vouch_response: 'acceptance signed by',
  key_confirmation_mac: 'code confirmation (MAC) from',
};

/** How one device came to be trusted, step by step, with the signatures that prove it. */
function chainItem(c) {
  const how = c.pairing_type === 'proxied'
    ? `proxied, vouched for by ${nameOf(c.vouched_by)}`
    : c.pairing_type === 'removed' ? 'no longer paired' : 'paired directly';
  return h('li', { class: 'card chain', dataset: { chain: c.device_id } },
    h('h4', {}, c.name ?? shortId(c.device_id), ' ', h('span', { class: 'muted' }, `— ${how}${c.trust_level ? `, ${c.trust_level}` : ''}`)),
    h('ol', { class: 'steps' }, (c.steps ?? []).map((st) => h('li', {},
      h('span', { class: 'muted' }, `#${st.seq} · ${fmtTime(st.at)}`), ' ', st.what,
      (st.evidence ?? []).length
        ? h('ul', { class: 'evidence' }, st.evidence.map((e) => h('li', {},
          `${EVIDENCE_TEXT[e.kind] ?? e.kind} ${nameOf(e.by)}: `,
          h('code', { title: e.value }, e.value.length > 24 ? `${e.value.slice(0, 16)}…${e.value.slice(-8)}` : e.value))))
        : null))),
  );
}

// ----------------------------------------------------------------------------------------
// Actions

async function sendText(deviceId, text) {
  const result = await run(`send:${deviceId}`, 'Sending', ['messages'], () =>
    api.action('network.message.send', { device_id: deviceId, text }));
  if (result) {
    toast(`Delivered to ${nameOf(deviceId)}.`);
    return true;
  }
  return false;
}

async function ping(deviceId) {
  const result = await run(`ping:${deviceId}`, 'Ping', ['messages'], () =>
    api.action('network.device.ping', { device_id: deviceId }));
  if (result) toast(`${nameOf(deviceId)} answered in ${result.rtt_ms.toFixed(1)} ms.`);
}

async function clearMessages() {
  const result = await run('messages-clear', 'Deleting', ['messages'], () => api.action('network.message.clearInbox'));
  if (result) {
    state.messages = [];
    toast(`Deleted ${result.cleared} ${result.cleared === 1 ? 'message' : 'messages'}.`);
    changed('messages');
  }
}

async function pairWith(deviceId, addr) {
  const result = await run(`pair:${deviceId}`, 'Pairing', ['nearby', 'prompts'], () =>
    api.action('network.pair.request', addr ? { device_id: deviceId, addr } : { device_id: deviceId }));
  // The event stream may already have brought a newer state of this pairing than the
  // action's answer: the answer only fills in a pairing the page does not know yet.
  const known = state.pairings.get(deviceId);
  if (result && (!known || known.failed)) {
    upsertPairing(result.pairing ?? { device_id: deviceId, direction: 'outbound', stage: 'awaiting_peer_key' });
  }
}

async function answerPairing(deviceId, match) {
  const p = state.pairings.get(deviceId);
  const result = await run(`pair:${deviceId}`, match ? 'Confirming' : 'Declining', ['prompts'], () =>
    api.action(match ? 'network.pair.accept' : 'network.pair.reject', { device_id: deviceId }));
  if (!result || !p) return;
  if (match) {
    p.confirmed = true;
    if (result.state === 'paired') toast(`Paired with ${p.name ?? shortId(deviceId)}.`);
  } else {
    p.failed = 'user_rejected';
  }
  changed('prompts', 'nearby');
}

async function vouch(r, all) {
  const params = all ? { vouchee: r.vouchee, all: true } : { vouchee: r.vouchee, to: [...r.selected] };
  const result = await run(`vouch:${r.id}`, 'Vouching', ['prompts'], () => api.action('network.pair.vouch', params));
  if (result) {
    state.ready.delete(r.id);
    toast(`Vouching for ${r.vouchee_name ?? shortId(r.vouchee)}: follow the answers under "Vouching sessions".`);
    changed('prompts', 'sessions');
  }
}

async function confirmProxy(q, accept) {
  const result = await run(`proxy:${q.id}`, accept ? 'Accepting' : 'Rejecting', ['prompts'], () =>
    api.action('network.pair.confirmProxy', { id: q.id, accept }));
  if (result) {
    state.proxy.delete(q.id);
    const name = q.vouchee_name ?? shortId(q.vouchee);
    if (result.decision === 'accepted') toast(`Accepted ${name}.`);
    else if (accept) toast(`${name} could not be accepted: ${result.reason ?? 'refused'}. Nothing was stored.`, 'error');
    else toast(`Rejected ${name}; nothing was stored.`);
    changed('prompts');
  }
}

async function setTrust(deviceId, level) {
  const d = await run(`trust:${deviceId}`, 'Changing trust', ['devices'], () =>
    api.action('network.device.setTrust', { device_id: deviceId, trust_level: level }));
  if (d) {
    state.devices.set(deviceId, d);
    toast(`${d.name} is now ${d.trust_level}.`);
    changed('devices');
  }
}

/** Why a device stays offline although it connects: its last key proof failed. */
function keyProofText(d) {
  if (d.key_proof_failed === 'not_paired_on_peer') {
    return `${d.name} connects but no longer holds this pairing (it was reset, or it unpaired this device). Pair the two again, or unpair it.`;
  }
  return `${d.name} connects but could not prove it holds the pairing key (${d.key_proof_failed}).`;
}

async function review(deviceId, keep) {
  const name = nameOf(deviceId);
  const result = await run(`review:${deviceId}`, keep ? 'Keeping' : 'Removing', ['devices'], () =>
    api.action('network.device.review', { device_id: deviceId, keep }));
  if (result) {
    const d = state.devices.get(deviceId);
    if (!keep) state.devices.delete(deviceId);
    else if (d) d.review = false;
    toast(keep ? `Kept ${name}.` : `Removed ${name}.`);
    changed('devices', 'nearby');
  }
}

async function unpair(deviceId) {
  const name = nameOf(deviceId);
  const ok = await run(`unpair:${deviceId}`, 'Unpairing', ['devices'], () =>
    api.action('network.device.unpair', { device_id: deviceId }));
  if (ok) {
    state.devices.delete(deviceId);
    state.unpairAsk = null;
    toast(`Unpaired ${name}.`);
    changed('devices', 'nearby');
    $('devices-h').focus();
  }
}

// ----------------------------------------------------------------------------------------
// Resources and prompts from the node

function upsertPairing(v) {
  if (!v?.device_id) return;
  const p = state.pairings.get(v.device_id) ?? { device_id: v.device_id };
  if (p.failed) {
    // A new pairing with the same device replaces the failed one.
    for (const k of Object.keys(p)) delete p[k];
    p.device_id = v.device_id;
  }
  learnName(v.device_id, v.name);
  for (const k of ['name', 'direction', 'code', 'stage', 'peer_confirmed', 'deadline']) {
    if (v[k] !== undefined && v[k] !== null) p[k] = v[k];
  }
  state.pairings.set(v.device_id, p);
  changed('prompts', 'nearby');
}

function pairingFailed(deviceId, reason) {
  const p = state.pairings.get(deviceId) ?? { device_id: deviceId };
  p.failed = reason ?? 'failed';
  state.pairings.set(deviceId, p);
  changed('prompts', 'nearby');
}

function pairingGone(deviceId) {
  const p = state.pairings.get(deviceId);
  if (!p || p.failed) return;
  state.pairings.delete(deviceId);
  if (state.devices.has(deviceId)) toast(`Paired with ${state.devices.get(deviceId).name}.`);
  changed('prompts', 'nearby');
}

/** The "choose who to vouch to" prompt; `ev` is the event or a pending session. */
function addReady(ev, fromEvent) {
  const id = ev.session_id ?? ev.id;
  if (!id) return;
  const r = state.ready.get(id) ?? { id, selected: new Set(), dismissed: false };
  r.vouchee = ev.vouchee ?? ev.vouchee_id ?? ev.device_id ?? r.vouchee;
  r.vouchee_name = ev.vouchee_name ?? ev.name ?? r.vouchee_name;
  learnName(r.vouchee, r.vouchee_name);
  const list = ev.targets ?? ev.candidates;
  if (fromEvent && Array.isArray(list)) {
    r.candidates = list.map((t) => (typeof t === 'string' ? t : t?.device_id)).filter(Boolean);
  }
  if (fromEvent) r.dismissed = false;
  state.ready.set(id, r);
  changed('prompts', 'sessions');
}

/** The "accept this vouch?" prompt, from its event or from `GET /v1/proxy/requests`. */
function addProxy(ev) {
  const q = {
    id: ev.id ?? ev.request_id ?? ev.prompt_id,
    voucher: ev.voucher ?? ev.voucher_id,
    voucher_name: ev.voucher_name,
    vouchee: ev.vouchee ?? ev.vouchee_id ?? ev.device_id,
    vouchee_name: ev.vouchee_name ?? ev.name,
    fingerprint: ev.fingerprint ?? fingerprintOf(ev.vouchee ?? ev.vouchee_id ?? ev.device_id),
    deadline: ev.deadline ?? ev.expires_at,
  };
  if (q.id == null) return;
  q.id = String(q.id);
  learnName(q.voucher, q.voucher_name);
  learnName(q.vouchee, q.vouchee_name);
  state.proxy.set(q.id, q);
  changed('prompts');
}

function setSession(s) {
  state.sessions.set(s.id, s);
  if (s.state === 'pending') {
    if (!state.ready.has(s.id)) addReady({ session_id: s.id, vouchee: s.vouchee, vouchee_name: s.vouchee_name }, false);
  } else {
    state.ready.delete(s.id);
  }
  changed('sessions', 'prompts');
}

function apply(ev) {
  switch (ev.type) {
    case 'ResourceChanged':
      if (ev.resource === 'device') {
        state.devices.set(ev.id, ev.data);
        learnName(ev.id, ev.data?.name);
        changed('devices', 'nearby', 'prompts', 'sessions', 'messages');
        refreshPeers();
        auditSoon();
      } else if (ev.resource === 'pairing_session') {
        upsertPairing(ev.data);
      } else if (ev.resource === 'vouching_session') {
        setSession(ev.data);
        auditSoon();
      } else if (ev.resource === 'proxy_request') {
        addProxy({ id: ev.id, ...ev.data });
      } else if (ev.resource === 'block') {
        auditSoon();
      }
      break;
    case 'ResourceDeleted':
      if (ev.resource === 'device') {
        state.devices.delete(ev.id);
        changed('devices', 'nearby', 'messages');
        auditSoon();
      } else if (ev.resource === 'pairing_session') {
        pairingGone(ev.id);
      } else if (ev.resource === 'vouching_session') {
        state.sessions.delete(ev.id);
        state.ready.delete(ev.id);
        changed('sessions', 'prompts');
      } else if (ev.resource === 'block') {
        auditSoon();
      } else if (ev.resource === 'proxy_request' && state.proxy.delete(String(ev.id))) {
        changed('prompts');
      }
      break;
    case 'PairingConfirmationRequired':
      upsertPairing({ ...ev, stage: 'awaiting_user' });
      break;
    case 'PairingFailed':
      pairingFailed(ev.device_id, ev.reason);
      auditSoon();
      break;
    case 'ProxyPairingVouchingReady':
      addReady(ev, true);
      break;
    case 'ProxyPairingConfirmationRequired':
      addProxy(ev);
      break;
    case 'ProxyMessageRefused':
      toast(`Refused a ${ev.message} from ${nameOf(ev.from)}: ${ev.reason}. Nothing was stored.`, 'error');
      auditSoon();
      break;
    case 'DeviceReviewRequired':
      toast(`${nameOf(ev.device_id)} was vouched for by a device you unpaired: review it under "Your devices".`);
      break;
    case 'KeyProofFailed':
      toast(`${nameOf(ev.device_id)} connected but could not prove it holds the pairing key (${ev.reason}).`, 'error');
      break;
    case 'MessageReceived':
      learnName(ev.from, ev.from_name);
      state.messages.push({ from: ev.from, text: ev.text, received_at: ev.received_at });
      changed('messages');
      toast(`Message from ${nameOf(ev.from)}: ${ev.text}`);
      break;
    case 'NodeStopped':
      // The only reason so far: its store could not make a write durable (a full or failing
      // disk). The node is gone once this arrives, so the page says why for as long as it
      // is: a toast would fade, and "trying again" alone would never come true.
      state.stopped = { detail: ev.detail, diskFull: ev.disk_full };
      setConn('stopped', stoppedAdvice(state.stopped));
      break;
    default:
      break;
  }
}

async function optional(path, fallback) {
  try {
    return await api.get(path);
  } catch (e) {
    // Proxy pairing may not be in this node yet (501): then there is nothing to show.
    if (e.status === 501 || e.status === 404) return fallback;
    throw e;
  }
}

async function loadAll() {
  const [me, devices, peers, pairings, sessions, proxy, messages] = await Promise.all([
    api.get('/v1/node'),
    api.get('/v1/devices'),
    api.get('/v1/peers'),
    api.get('/v1/pairings'),
    api.get('/v1/sessions'),
    optional('/v1/proxy/requests', []),
    api.get('/v1/inbox'),
  ]);
  state.me = me;
  state.messages = messages;
  state.devices = new Map(devices.map((d) => [d.device_id, d]));
  for (const d of devices) learnName(d.device_id, d.name);
  state.peers = peers;
  const failed = [...state.pairings.values()].filter((p) => p.failed);
  state.pairings = new Map(failed.map((p) => [p.device_id, p]));
  for (const p of pairings) upsertPairing(p);
  state.sessions = new Map();
  for (const s of sessions) setSession(s);
  for (const id of [...state.ready.keys()]) if (!state.sessions.has(id)) state.ready.delete(id);
  state.proxy = new Map();
  for (const q of Array.isArray(proxy) ? proxy : []) addProxy(q);
  changedAll();
  loadAudit();
}

async function refreshPeers() {
  if (!live()) return;
  try {
    state.peers = await api.get('/v1/peers');
    changed('nearby');
  } catch {
    // The event stream notices an unreachable node and says so.
  }
}

async function loadAudit() {
  try {
    const [entries, verify, chains] = await Promise.all([
      api.get('/v1/audit'),
      api.get('/v1/audit?verify=true'),
      optional('/v1/audit/chains', null),
    ]);
    state.audit = entries;
    state.verify = verify;
    state.chains = Array.isArray(chains) ? chains : null;
    state.auditError = null;
  } catch (e) {
    state.auditError = e.message;
  }
  changed('audit');
}

let auditTimer = null;
/** Reloads the audit trail shortly after a change that adds to it (several changes, once). */
function auditSoon() {
  clearTimeout(auditTimer);
  auditTimer = setTimeout(loadAudit, 300);
}

/** What the user can do about a node that stopped on its own, and the disk's own words. */
function stoppedAdvice(stopped) {
  return `${stopped.diskFull ? 'Free space on this device' : 'Check this device\'s disk'}, then start it again with \`vouchnet run\`. (${stopped.detail})`;
}

/** The node cannot be reached: it stopped on its own (and the page says why), or it is just
 * away. */
function offline() {
  if (state.stopped) setConn('stopped', stoppedAdvice(state.stopped));
  else setConn('reconnecting');
}

function setConn(conn, message = '') {
  state.conn = conn;
  state.connMessage = message;
  changedAll();
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Follows the node for as long as the session lives, reconnecting when it drops. */
async function follow() {
  let delay = 500;
  for (;;) {
    const why = await api.followEvents({
      onOpen: async () => {
        try {
          await loadAll();
          state.stopped = null;
          setConn('live');
          delay = 500;
          return true;
        } catch (e) {
          if (e.status === 401) setConn('ended');
          else offline();
          return false;
        }
      },
      onEvent: apply,
    });
    if (why === 'unauthorized' || state.conn === 'ended') {
      setConn('ended');
      return;
    }
    if (why === 'lagged') continue; // load everything again at once
    offline();
    await sleep(delay);
    delay = Math.min(delay * 2, 10000);
  }
}

// ----------------------------------------------------------------------------------------
// Start

function wire() {
  $('refresh-peers').addEventListener('click', refreshPeers);
  $('audit-refresh').addEventListener('click', loadAudit);
  $('audit-more').addEventListener('click', () => {
    state.showAllAudit = !state.showAllAudit;
    changed('audit');
  });
  $('send-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const f = e.target.elements;
    const text = f.text.value;
    if (!f.to.value) {
      toast('Pair a device first: messages go to paired devices.', 'error');
      return;
    }
    if (!text.trim()) {
      toast('Write something to send.', 'error');
      f.text.focus();
      return;
    }
    if (await sendText(f.to.value, text)) f.text.value = '';
  });
  $('send-ping').addEventListener('click', () => {
    const to = $('send-to').value;
    if (to) ping(to);
    else toast('Pair a device first.', 'error');
  });
  $('messages-clear').addEventListener('click', clearMessages);
  $('pair-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const f = e.target.elements;
    const addr = f.addr.value.trim();
    let id = f.device.value.trim();
    const inAddr = /\/p2p\/([^/]+)$/.exec(addr);
    if (!id && inAddr) id = inAddr[1];
    if (!id) {
      toast('Give the device id, or an address that ends in /p2p/<device id>.', 'error');
      f.device.focus();
      return;
    }
    pairWith(id, addr || null);
  });
  // Count policy violations where a test (or a curious user) can read them.
  document.addEventListener('securitypolicyviolation', () => {
    document.body.dataset.cspViolations = String(Number(document.body.dataset.cspViolations ?? 0) + 1);
  });
  // Deadlines count down in place; a prompt that runs out is redrawn as expired.
  setInterval(() => {
    let expired = false;
    for (const el of document.querySelectorAll('[data-deadline]')) {
      const d = Number(el.dataset.deadline);
      el.textContent = fmtLeft(d);
      if (Date.now() >= d) expired = true;
    }
    if (expired) changed('prompts');
  }, 1000);
  // Nearby devices have no events: look again now and then while the page is shown.
  setInterval(() => {
    if (!document.hidden) refreshPeers();
  }, 10000);
}

async function start() {
  wire();
  // A login link pasted into this tab changes only the fragment: start again with it.
  window.addEventListener('hashchange', () => {
    if (/(?:^#|&)login=/.test(location.hash)) location.reload();
  });
  const m = /(?:^#|&)login=([0-9a-fA-F]+)/.exec(location.hash);
  // The one-time token leaves the address bar and the history at once.
  if (location.hash) history.replaceState(null, '', location.pathname);
  if (!m) {
    setConn('no-login');
    return;
  }
  try {
    await api.login(m[1]);
  } catch (e) {
    setConn('login-failed', e.message);
    return;
  }
  setConn('connecting');
  follow();
}

start();
