// Vadyl auditor's console. Read-only: every request is a GET to this origin's API.
// Trust nothing the server says about itself: each event shown is hashed here (RFC 8785 canonical
// JSON, SHA-256), its inclusion proof folded here (RFC 9162), and the checkpoint's Ed25519
// signature checked here (WebCrypto) against the verifier key the auditor pinned.
'use strict';

const API = '/api/Connector';
const PAGE = 50;
const S = {
  token: sessionStorage.getItem('vadyl.token') || '',
  key: sessionStorage.getItem('vadyl.key') || '',
  at: null, // time travel: a log position, or null for now
  head: 0,
  live: null, // AbortController of the live feed
  checkpoints: new Map(), // note text -> Promise of its verification
};

// ---------- small helpers ----------

const $ = (sel, root = document) => root.querySelector(sel);
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}
const link = (href, text) => el('a', { href }, text);
const utf8 = (s) => new TextEncoder().encode(s);
function hexToBytes(h) {
  if (!/^([0-9a-f]{2})*$/.test(h)) throw new Error('not lowercase hex: ' + h.slice(0, 16));
  const out = new Uint8Array(h.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(h.substr(i * 2, 2), 16);
  return out;
}
const bytesToHex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
function b64ToBytes(s) {
  const bin = atob(s);
  return Uint8Array.from(bin, (c) => c.charCodeAt(0));
}
function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let i = 0;
  for (const p of parts) { out.set(p, i); i += p.length; }
  return out;
}
const equal = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);
async function sha256(bytes) {
  return new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
}

// ---------- API ----------

class ApiError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || 'HTTP ' + status);
    this.status = status;
    this.problem = problem;
  }
}

async function api(path, accept = 'application/json', tries = 4) {
  const r = await fetch(API + path, { headers: { Authorization: 'Bearer ' + S.token, Accept: accept }, cache: 'no-store' });
  if (r.status === 429 && tries > 1) {
    // The token's rate limit: wait as told, then ask again.
    const wait = Math.min(10, Number(r.headers.get('Retry-After')) || 1);
    await new Promise((ok) => setTimeout(ok, wait * 1000));
    return api(path, accept, tries - 1);
  }
  if (!r.ok) {
    let problem = null;
    try { problem = await r.json(); } catch (_) { /* not a problem document */ }
    throw new ApiError(r.status, problem);
  }
  return r;
}
const getJson = async (path) => (await api(path)).json();
const getText = async (path) => (await api(path, 'text/plain')).text();

// ---------- verification ----------

// RFC 8785 (JCS) for the JSON the log holds: object keys sorted by UTF-16 code units, strings and
// numbers as ECMAScript's JSON.stringify writes them (JCS is defined by exactly that).
function canonical(v) {
  if (v === null || typeof v !== 'object') {
    if (typeof v === 'number' && !Number.isFinite(v)) throw new Error('non-finite number');
    return JSON.stringify(v);
  }
  if (Array.isArray(v)) return '[' + v.map(canonical).join(',') + ']';
  const keys = Object.keys(v).sort();
  return '{' + keys.map((k) => JSON.stringify(k) + ':' + canonical(v[k])).join(',') + '}';
}

// An event's hash: SHA-256 of its canonical envelope without the `hash` member.
async function eventHash(event) {
  const copy = Object.assign({}, event);
  delete copy.hash;
  return bytesToHex(await sha256(utf8(canonical(copy))));
}

// The pinned verifier key, C2SP form `<name>+<8 hex key id>+<base64(0x01 || key)>`.
async function pinnedKey() {
  const text = S.key.trim();
  const m = /^([^+\s]+)\+([0-9a-f]{8})\+([A-Za-z0-9+/=]+)$/.exec(text);
  if (!m) throw new Error('the pinned key is not a verifier key (name+keyid+base64)');
  const typed = b64ToBytes(m[3]);
  if (typed.length !== 33 || typed[0] !== 1) throw new Error('the pinned key is not an Ed25519 verifier key');
  const raw = typed.slice(1);
  const id = (await sha256(concat(utf8(m[1] + '\n'), typed))).slice(0, 4);
  if (bytesToHex(id) !== m[2]) throw new Error('the pinned key\u2019s key id does not match its key');
  if (!crypto.subtle) throw new Error('this page is not a secure context (serve it over HTTPS or from localhost)');
  const key = await crypto.subtle.importKey('raw', raw, { name: 'Ed25519' }, false, ['verify']);
  return { name: m[1], id, key };
}

// A signed note, checked: returns the checkpoint it carries or throws saying what failed.
function verifyCheckpoint(note) {
  if (!S.checkpoints.has(note)) S.checkpoints.set(note, checkNote(note));
  return S.checkpoints.get(note);
}
async function checkNote(note) {
  const pinned = await pinnedKey();
  const split = note.lastIndexOf('\n\n');
  if (split < 0) throw new Error('the checkpoint has no signature block');
  const text = note.slice(0, split + 1);
  const lines = note.slice(split + 2).split('\n').filter((l) => l.length);
  let verified = false;
  for (const line of lines) {
    const m = /^\u2014 (\S+) ([A-Za-z0-9+/=]+)$/.exec(line);
    if (!m) throw new Error('malformed signature line in the checkpoint');
    const blob = b64ToBytes(m[2]);
    if (m[1] !== pinned.name || !equal(blob.slice(0, 4), pinned.id)) continue;
    const ok = await crypto.subtle.verify({ name: 'Ed25519' }, pinned.key, blob.slice(4), utf8(text));
    if (!ok) throw new Error('the checkpoint\u2019s signature does not verify with the pinned key');
    verified = true;
  }
  if (!verified) throw new Error('the checkpoint is not signed by the pinned key ' + pinned.name);
  const body = text.split('\n');
  const size = Number(body[1]);
  const root = b64ToBytes(body[2]);
  if (!Number.isSafeInteger(size) || root.length !== 32) throw new Error('the checkpoint body is malformed');
  const head = (body.find((l) => l.startsWith('head ')) || '').slice(5);
  return { origin: body[0], size, root, head, signer: pinned.name };
}

// RFC 9162 §2.1.3.2: the root an audit path leads to from leaf `index` of a tree of `size`.
async function rootFromPath(leaf, index, size, path) {
  if (index >= size) throw new Error('leaf index outside the tree');
  let fn = index, sn = size - 1, r = leaf;
  for (const p of path) {
    if (sn === 0) throw new Error('the audit path is too long');
    if (fn % 2 === 1 || fn === sn) {
      r = await sha256(concat([1], p, r));
      if (fn % 2 === 0) while (fn % 2 === 0 && fn !== 0) { fn = Math.floor(fn / 2); sn = Math.floor(sn / 2); }
    } else {
      r = await sha256(concat([1], r, p));
    }
    fn = Math.floor(fn / 2); sn = Math.floor(sn / 2);
  }
  if (sn !== 0) throw new Error('the audit path is too short');
  return r;
}

// Verifies one event as shown: its content against its hash, its hash into the signed tree.
// Resolves to { state: 'verified' | 'failed' | 'pending', detail }. A verified (position, content)
// is remembered for the tab, so paging back and forth does not ask for its proof again.
const verified = new Map();
async function verifyEvent(event) {
  const key = event.position + ':' + canonical(event);
  if (verified.has(key)) return verified.get(key);
  const result = await checkEvent(event);
  if (result.state === 'verified') verified.set(key, result);
  return result;
}
async function checkEvent(event) {
  try {
    const recomputed = await eventHash(event);
    if (recomputed !== event.hash) {
      return { state: 'failed', detail: 'content does not match its hash (recomputed ' + recomputed.slice(0, 12) + '…)' };
    }
    let proof;
    try {
      proof = await getJson('/audit/proof/inclusion?position=' + event.position);
    } catch (e) {
      if (e instanceof ApiError && (e.status === 409 || e.status === 404)) {
        return { state: 'pending', detail: 'not yet under a signed checkpoint' };
      }
      throw e;
    }
    const cp = await verifyCheckpoint(proof.checkpoint);
    if (proof.leafIndex !== event.position - 1 || proof.treeSize !== cp.size) {
      return { state: 'failed', detail: 'the proof is for another leaf or tree' };
    }
    const leaf = await sha256(concat([0], hexToBytes(event.hash)));
    const root = await rootFromPath(leaf, proof.leafIndex, proof.treeSize, proof.auditPath.map(hexToBytes));
    if (!equal(root, cp.root)) return { state: 'failed', detail: 'inclusion proof does not lead to the signed root' };
    return { state: 'verified', detail: 'in the tree of ' + cp.size + ' signed by ' + cp.signer };
  } catch (e) {
    return { state: 'failed', detail: e.message };
  }
}

function badge(result) {
  const text = { verified: 'verified', failed: 'failed', pending: 'pending' }[result.state];
  return el('span', { class: 'badge ' + result.state, title: result.detail, 'data-state': result.state }, text + (result.state === 'verified' ? '' : ': ' + result.detail));
}

// A cell that fills in with the event's verification when it is done (and retries a pending one).
function verificationCell(event) {
  const td = el('td', { class: 'verification' }, el('span', { class: 'badge pending', 'data-state': 'checking' }, 'checking…'));
  const run = async (tries) => {
    const result = await verifyEvent(event);
    td.replaceChildren(badge(result));
    if (result.state === 'pending' && tries > 0 && td.isConnected) setTimeout(() => run(tries - 1), 1500);
  };
  run(20);
  return td;
}

// ---------- time travel ----------

async function refreshHead() {
  const page = await getJson('/events?limit=1&after=' + Number.MAX_SAFE_INTEGER);
  S.head = page.head;
  const slider = $('#at-slider');
  slider.max = String(Math.max(1, S.head));
  if (S.at === null) { slider.value = slider.max; $('#at-position').value = ''; }
}

function setAt(position) {
  S.at = position === null ? null : Math.max(1, Math.min(S.head, position));
  $('#at-slider').value = String(S.at === null ? S.head : S.at);
  $('#at-position').value = S.at === null ? '' : String(S.at);
  render();
}

async function showTravel() {
  const state = $('#at-state');
  const digests = $('#digests');
  if (S.at === null) {
    state.textContent = 'now (head ' + S.head + ')';
    digests.textContent = '';
    return null;
  }
  state.textContent = 'as the registry stood after event ' + S.at + ' of ' + S.head;
  const replay = await getJson('/audit/replay?to=' + S.at);
  const short = (h) => String(h).replace('sha256:', '').slice(0, 12);
  digests.textContent = 'projection digests at ' + S.at + ': state ' + short(replay.digests.state) + ' · ' +
    Object.entries(replay.digests.projections).map(([k, v]) => k + ' ' + short(v)).join(' · ');
  return replay;
}

// The first position recorded at or after a date: a binary search over positions.
async function positionAtDate(iso) {
  let lo = 1, hi = S.head, found = S.head;
  while (lo <= hi) {
    const mid = Math.floor((lo + hi) / 2);
    const e = await getJson('/events/' + mid);
    if (e.recordedAt >= iso) { found = mid; hi = mid - 1; } else lo = mid + 1;
  }
  return found;
}

// ---------- pages ----------

function eventSummary(e) {
  const p = e.payload || {};
  switch (e.type) {
    case 'PublicationCreated': return ['version ', link('#/publication/' + p.publicationVersion, 'v' + p.publicationVersion), ' admits ', link('#/implementation/' + encodeURIComponent(p.admitted), p.admitted)];
    case 'PublicationInvalidated': return [link('#/publication/' + p.publicationVersion, 'v' + p.publicationVersion), ' invalidated: ' + p.reason + '; latest → ' + (p.newLatest ?? 'none')];
    case 'ImplementationBuilt': return [link('#/implementation/' + encodeURIComponent(p.implementationId), p.implementationId), ' (' + p.source + ', ' + p.contract + ')'];
    case 'ConformanceRunCompleted': return [link('#/implementation/' + encodeURIComponent(p.implementationId), p.implementationId), p.passed ? ' passed' : ' failed', ' run ' + p.runId];
    case 'BindingCreated':
    case 'BindingChanged': return [link('#/project/' + encodeURIComponent(p.project), p.project), ' / ' + p.alias + ' → ' + p.target];
    default: return [el('span', { class: 'muted mono' }, canonical(p).slice(0, 120))];
  }
}

function eventRow(e) {
  return el('tr', { class: 'event', 'data-position': e.position, 'data-type': e.type },
    el('td', { class: 'mono' }, String(e.position)),
    el('td', { class: 'mono' }, e.recordedAt),
    el('td', {}, e.type),
    el('td', { class: 'mono' }, e.streamId + ' #' + e.streamVersion),
    el('td', {}, e.actor),
    el('td', {}, eventSummary(e)),
    verificationCell(e),
    el('td', {}, el('button', { type: 'button', class: 'proof-download', onclick: () => downloadProof(e.position) }, 'proof')));
}

function eventTable(events) {
  return el('table', { id: 'events' },
    el('thead', {}, el('tr', {}, ['#', 'recorded', 'type', 'stream', 'actor', 'what', 'verification', ''].map((h) => el('th', {}, h)))),
    el('tbody', {}, events.map(eventRow)));
}

async function pageTimeline(params) {
  const filters = ['type', 'stream', 'actor', 'since', 'until'];
  const form = el('form', { class: 'filters', id: 'filters' },
    filters.map((f) => el('label', {}, f, el('input', { name: f, id: 'filter-' + f, value: params.get(f) || '', placeholder: f === 'type' ? 'e.g. PublicationInvalidated' : '' }))),
    el('button', { type: 'submit', class: 'primary', id: 'apply-filters' }, 'Filter'));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams();
    for (const f of filters) { const v = form.elements[f].value.trim(); if (v) q.set(f, v); }
    location.hash = '#/timeline?' + q.toString();
  });
  const q = new URLSearchParams();
  for (const f of filters) if (params.get(f)) q.set(f, params.get(f));
  const unfiltered = [...q.keys()].length === 0;
  const upTo = S.at === null ? S.head : S.at;
  // Without filters, the newest page first; with them, from `after` on.
  let after = params.has('after') ? Number(params.get('after')) : (unfiltered ? Math.max(0, upTo - PAGE) : 0);
  q.set('after', String(after));
  q.set('limit', String(PAGE));
  const page = await getJson('/events?' + q.toString());
  const events = page.events.filter((e) => e.position <= upTo);
  const nav = (label, to, id) => el('a', { id, href: '#/timeline?' + new URLSearchParams([...[...q].filter(([k]) => k !== 'after' && k !== 'limit'), ['after', String(to)]]).toString() }, label);
  const toolbar = el('div', { class: 'toolbar' },
    after > 0 ? nav('← earlier', Math.max(0, after - PAGE), 'page-earlier') : null,
    page.next !== null && page.next !== undefined && page.next < upTo ? nav('later →', page.next, 'page-later') : null,
    el('span', { class: 'muted', id: 'page-state' }, events.length + ' events shown · head ' + page.head + (S.at !== null ? ' · as of ' + S.at : '')),
    el('span', { class: 'live', id: 'live-state' }));
  const table = eventTable(events);
  $('#view').replaceChildren(el('h2', {}, 'Timeline'), form, toolbar, table);
  // Live: on the newest page of the present, new events are appended as the feed delivers them.
  const newest = S.at === null && (page.next === null || page.next === undefined);
  if (newest) follow(page.head, table, q);
}

// Follows the SSE feed with fetch (EventSource cannot send a token), appending matching events.
async function follow(after, table, q) {
  stopLive();
  const ctl = new AbortController();
  S.live = ctl;
  const want = (e) => (!q.get('type') || e.type === q.get('type')) && (!q.get('stream') || e.streamId === q.get('stream')) && (!q.get('actor') || e.actor === q.get('actor'));
  try {
    const r = await fetch(API + '/events/stream?after=' + after, { headers: { Authorization: 'Bearer ' + S.token, Accept: 'text/event-stream' }, signal: ctl.signal });
    if (!r.ok || !r.body) return;
    $('#live-state') && ($('#live-state').textContent = '● live');
    const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = block.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trimStart()).join('\n');
        const kind = (block.split('\n').find((l) => l.startsWith('event:')) || 'event: message').slice(6).trim();
        if (!data || kind !== 'message') continue;
        const e = JSON.parse(data);
        S.head = Math.max(S.head, e.position);
        $('#at-slider').max = String(S.head);
        if (S.at === null) $('#at-slider').value = String(S.head);
        if (want(e)) $('tbody', table).append(eventRow(e));
      }
    }
  } catch (e) {
    if (e.name !== 'AbortError') console.warn('live feed ended', e);
  }
}
function stopLive() {
  if (S.live) { S.live.abort(); S.live = null; }
}

// Every event of the publications stream up to the chosen position, each verified where shown.
async function publicationEvents() {
  const upTo = S.at === null ? S.head : S.at;
  const out = [];
  let after = 0;
  for (;;) {
    const page = await getJson('/events?stream=publications&limit=1000&after=' + after);
    out.push(...page.events.filter((e) => e.position <= upTo));
    if (page.next === null || page.next === undefined || page.next >= upTo) break;
    after = page.next;
  }
  return out;
}

// The history of every version, folded from the (verified) events: which was `latest` when.
function foldPublications(events) {
  const versions = new Map();
  let latest = null;
  const latestAt = [];
  for (const e of events) {
    const p = e.payload;
    if (e.type === 'PublicationCreated') {
      versions.set(p.publicationVersion, { version: p.publicationVersion, created: e, invalidated: null, entries: p.entries, admitted: p.admitted, basedOn: p.basedOn });
      latest = p.publicationVersion;
    } else if (e.type === 'PublicationInvalidated') {
      const v = versions.get(p.publicationVersion);
      if (v) v.invalidated = e;
      latest = p.newLatest ?? null;
    }
    latestAt.push({ position: e.position, latest });
  }
  return { versions, latest, latestAt };
}

async function pagePublications() {
  const replay = await showTravel();
  const events = await publicationEvents();
  const { versions, latest } = foldPublications(events);
  const latestNow = replay ? replay.summary.latestPublication : latest;
  const rows = [...versions.values()].reverse().map((v) => el('tr', { class: 'publication', 'data-version': v.version },
    el('td', {}, link('#/publication/' + v.version, 'v' + v.version)),
    el('td', { class: v.invalidated ? 'status-invalidated' : 'status-valid' }, v.invalidated ? 'invalidated' : 'valid'),
    el('td', {}, link('#/implementation/' + encodeURIComponent(v.admitted), v.admitted)),
    el('td', { class: 'mono' }, v.created.recordedAt),
    el('td', {}, v.created.actor),
    el('td', {}, v.invalidated ? v.invalidated.payload.reason : ''),
    verificationCell(v.created)));
  $('#view').replaceChildren(
    el('h2', {}, 'Publications'),
    el('p', {}, 'latest: ', el('strong', { id: 'latest' }, latestNow ? 'v' + latestNow : 'none'), S.at !== null ? ' (as of position ' + S.at + ')' : ''),
    el('table', { id: 'publications' }, el('thead', {}, el('tr', {}, ['version', 'status', 'admitted', 'created', 'by', 'invalidation', 'verification'].map((h) => el('th', {}, h)))), el('tbody', {}, rows)));
}

function dl(pairs) {
  return el('dl', {}, pairs.flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v)]));
}

async function pagePublication(version) {
  const replay = await showTravel();
  const events = await publicationEvents();
  const { versions, latest } = foldPublications(events);
  const v = versions.get(version);
  if (!v) {
    $('#view').replaceChildren(el('h2', {}, 'Publication v' + version), el('p', { class: 'error' }, S.at !== null ? 'version ' + version + ' did not exist yet at position ' + S.at : 'no such version'));
    return;
  }
  const latestNow = replay ? replay.summary.latestPublication : latest;
  const runs = await Promise.all(v.entries.map((en) => getJson('/conformance/runs/' + encodeURIComponent(en.conformanceRunId)).catch(() => null)));
  const mine = events.filter((e) => e.payload.publicationVersion === version);
  $('#view').replaceChildren(
    el('h2', {}, 'Publication v' + version),
    el('div', { class: 'card' }, dl([
      ['status', el('span', { id: 'publication-status', class: v.invalidated ? 'status-invalidated' : 'status-valid' }, v.invalidated ? 'invalidated' : 'valid')],
      ['latest ' + (S.at === null ? 'now' : 'at ' + S.at), el('strong', { id: 'latest' }, latestNow ? 'v' + latestNow : 'none')],
      ['based on', v.basedOn ? link('#/publication/' + v.basedOn, 'v' + v.basedOn) : 'none'],
      ['admitted', link('#/implementation/' + encodeURIComponent(v.admitted), v.admitted)],
      ['created', v.created.recordedAt + ' by ' + v.created.actor + ' (event ' + v.created.position + ')'],
      ['signature', el('span', { class: 'mono' }, v.created.payload.signature + ' (key ' + v.created.payload.keyId + ')')],
      ['invalidated', v.invalidated ? el('span', { id: 'invalidation' }, v.invalidated.recordedAt + ' by ' + v.invalidated.actor + ': “' + v.invalidated.payload.reason + '”; latest fell back to ', el('strong', { id: 'fell-back-to' }, v.invalidated.payload.newLatest ? 'v' + v.invalidated.payload.newLatest : 'none')) : 'no'],
    ])),
    el('div', { class: 'toolbar' },
      el('button', { type: 'button', id: 'download-report', onclick: () => downloadReport(version) }, 'Download report'),
      v.basedOn ? link('#/diff/' + v.basedOn + '/' + version, 'diff with v' + v.basedOn) : null),
    el('h3', {}, 'Entries'),
    el('table', { id: 'entries' },
      el('thead', {}, el('tr', {}, ['implementation', 'source', 'contract', 'content hash', 'admitted by run'].map((h) => el('th', {}, h)))),
      el('tbody', {}, v.entries.map((en, i) => el('tr', {},
        el('td', {}, link('#/implementation/' + encodeURIComponent(en.implementationId), en.implementationId)),
        el('td', {}, en.source), el('td', {}, en.contract),
        el('td', { class: 'mono' }, en.contentHash),
        el('td', {}, en.conformanceRunId + (runs[i] ? (runs[i].passed ? ' (passed ' : ' (failed ') + runs[i].checks.length + ' checks)' : '')))))),
    el('h3', {}, 'Its events'),
    eventTable(mine));
}

async function pageImplementation(id) {
  await showTravel();
  const imp = await getJson('/implementations/' + encodeURIComponent(id));
  const runs = await getJson('/conformance/runs?implementation=' + encodeURIComponent(id) + '&limit=1000');
  const config = await configuration(id).catch((e) => ({ what: 'unavailable: ' + e.message, document: null }));
  const list = runs.runs.filter((r) => S.at === null || r.recorded.position <= S.at);
  $('#view').replaceChildren(
    el('h2', {}, 'Implementation ' + id),
    el('div', { class: 'card' }, dl([
      ['source', imp.source], ['contract', imp.contract],
      ['content hash', el('span', { class: 'mono' }, imp.contentHash)],
      ['signature', el('span', { class: 'mono' }, imp.signature)],
      ['artifact', imp.artifactSize + ' bytes, ' + imp.mediaType],
      ['built', imp.built.at + ' by ' + imp.built.actor + ' (event ' + imp.built.position + ')'],
      ['published in', (imp.publishedIn || []).map((v) => [link('#/publication/' + v, 'v' + v), ' '])],
    ])),
    el('h3', {}, 'Declared: ', el('span', { id: 'configuration-what' }, config.what), ' (read from the verified artifact)'),
    el('pre', { id: 'configuration' }, JSON.stringify(config.document, null, 2)),
    el('h3', {}, 'Conformance runs'),
    el('table', { id: 'runs' }, el('thead', {}, el('tr', {}, ['run', 'result', 'checks', 'finished', 'published as'].map((h) => el('th', {}, h)))),
      el('tbody', {}, list.map((r) => el('tr', {},
        el('td', { class: 'mono' }, r.runId),
        el('td', { class: r.passed ? 'status-valid' : 'status-invalidated' }, r.passed ? 'passed' : 'failed'),
        el('td', {}, r.checks.map((c) => el('div', {}, c.id + ': ' + c.state + (c.detail ? ' — ' + c.detail : '')))),
        el('td', { class: 'mono' }, r.finishedAt),
        el('td', {}, r.publishedAs ? link('#/publication/' + r.publishedAs, 'v' + r.publishedAs) : ''))))));
}

async function pageProject(project) {
  await showTravel();
  const bindings = await getJson('/bindings?project=' + encodeURIComponent(project));
  // At a chosen position: the registry replayed that far, and what each binding resolved to then.
  const then = S.at === null ? null : await getJson('/audit/replay?to=' + S.at + '&project=' + encodeURIComponent(project));
  const thenOf = new Map(then ? then.bindings.map((b) => [b.alias, b]) : []);
  const resolution = (r) => (r.status === 'resolved' ? r.implementationId + ' (in v' + r.publicationVersion + ')' : r.status + (r.implementationId ? ' ' + r.implementationId : ''));
  const records = await getJson('/invocations?project=' + encodeURIComponent(project) + '&limit=20').catch(() => ({ records: [] }));
  const headers = ['alias', 'target now', 'resolves to now', 'changed'].concat(S.at === null ? [] : ['target at ' + S.at, 'resolved to at ' + S.at]);
  $('#view').replaceChildren(
    el('h2', {}, 'Project ' + project),
    el('h3', {}, 'Bindings'),
    el('table', { id: 'bindings' }, el('thead', {}, el('tr', {}, headers.map((h) => el('th', {}, h)))),
      el('tbody', {}, bindings.bindings.map((b) => {
        const old = thenOf.get(b.alias);
        return el('tr', { 'data-alias': b.alias },
          el('td', {}, b.alias), el('td', { class: 'mono' }, b.target),
          el('td', { class: 'mono resolves' }, resolution(b.resolvesTo)),
          el('td', { class: 'mono' }, b.updated.at + ' (rev ' + b.revision + ')'),
          S.at === null ? null : el('td', { class: 'mono' }, old ? old.target : 'not bound yet'),
          S.at === null ? null : el('td', { class: 'mono resolved-then' }, old ? resolution(old.resolvesTo) : '—'));
      }))),
    el('h3', {}, 'Recent invocations (redacted records)'),
    el('pre', { id: 'invocations' }, JSON.stringify(records.records, null, 2).slice(0, 20000)));
}

// Every leaf of a JSON document by its JSON Pointer (RFC 6901).
function flatten(v, pointer = '', out = new Map()) {
  if (v !== null && typeof v === 'object' && Object.keys(v).length) {
    for (const [k, x] of Object.entries(v)) flatten(x, pointer + '/' + String(k).replace(/~/g, '~0').replace(/\//g, '~1'), out);
  } else {
    out.set(pointer || '/', canonical(v));
  }
  return out;
}

const configurations = new Map();
function configuration(id) {
  if (!configurations.has(id)) configurations.set(id, getJson('/implementations/' + encodeURIComponent(id) + '/configuration'));
  return configurations.get(id);
}

// What differs between two versions: their status, the entries added or removed, and for each
// connector whose newest entry changed, every field of its manifest or descriptor that differs
// (allow-list, secrets named, limits, operations…).
async function pageDiff(a, b) {
  const events = await publicationEvents();
  const { versions } = foldPublications(events);
  const choices = [...versions.keys()];
  const select = (id, value) => el('select', { id }, choices.map((v) => el('option', { value: v, selected: v === value }, 'v' + v)));
  const sa = select('diff-a', a || choices[choices.length - 2]);
  const sb = select('diff-b', b || choices[choices.length - 1]);
  const go = el('button', { type: 'button', class: 'primary', id: 'diff-go', onclick: () => { location.hash = '#/diff/' + sa.value + '/' + sb.value; } }, 'Compare');
  const out = [el('h2', {}, 'Diff of two publication versions'), el('div', { class: 'toolbar' }, sa, ' → ', sb, go)];
  const va = versions.get(Number(sa.value)), vb = versions.get(Number(sb.value));
  if (va && vb) {
    const row = (field, what, l, r) => el('tr', { class: l === r ? 'same' : 'changed', 'data-field': field }, el('td', {}, what[0]), el('td', { class: 'mono' }, what[1]), el('td', { class: 'mono' }, l), el('td', { class: 'mono' }, r));
    const rows = [];
    const status = (v) => (v.invalidated ? 'invalidated: ' + v.invalidated.payload.reason : 'valid');
    rows.push(row('status', ['(version)', 'status'], status(va), status(vb)));
    // Entries, by implementation id.
    const ids = (v) => new Map(v.entries.map((en) => [en.implementationId, en]));
    const ia = ids(va), ib = ids(vb);
    for (const id of [...new Set([...ia.keys(), ...ib.keys()])].sort()) {
      const l = ia.has(id) ? ia.get(id).contentHash : '—', r = ib.has(id) ? ib.get(id).contentHash : '—';
      rows.push(row('entry ' + id, [id, 'entry'], l, r));
    }
    // Each connector's newest entry on either side, and what its configuration says.
    const newest = (v) => {
      const m = new Map();
      for (const en of v.entries) m.set(en.implementationId.split(':')[0], en.implementationId);
      return m;
    };
    const na = newest(va), nb = newest(vb);
    for (const name of [...new Set([...na.keys(), ...nb.keys()])].sort()) {
      if (na.get(name) === nb.get(name)) continue;
      const [ca, cb] = await Promise.all([na.get(name), nb.get(name)].map((id) => (id ? configuration(id).then((c) => flatten(c.document)) : new Map())));
      for (const pointer of [...new Set([...ca.keys(), ...cb.keys()])].sort()) {
        const l = ca.has(pointer) ? ca.get(pointer) : '—', r = cb.has(pointer) ? cb.get(pointer) : '—';
        if (l !== r) rows.push(row(name + ' ' + pointer, [name, pointer], l, r));
      }
    }
    const changed = rows.filter((r) => r.classList.contains('changed')).length;
    out.push(el('p', { id: 'diff-summary' }, changed + ' differences between v' + va.version + ' and v' + vb.version),
      el('table', { id: 'diff' }, el('thead', {}, el('tr', {}, ['entry', 'field', 'v' + va.version, 'v' + vb.version].map((h) => el('th', {}, h)))), el('tbody', {}, rows)));
  }
  $('#view').replaceChildren(...out);
}

// ---------- downloads ----------

function save(name, blob) {
  const a = el('a', { href: URL.createObjectURL(blob), download: name });
  document.body.append(a);
  a.click();
  setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
}
async function downloadExport() {
  const r = await api('/audit/export', 'application/x-ndjson');
  save('vadyl-export.ndjson', await r.blob());
}
async function downloadProof(position) {
  const proof = await getJson('/audit/proof/inclusion?position=' + position);
  save('vadyl-proof-' + position + '.json', new Blob([JSON.stringify(proof, null, 2)], { type: 'application/json' }));
}
async function downloadReport(version) {
  const events = await publicationEvents();
  const { versions } = foldPublications(events);
  const v = versions.get(version);
  const report = { publicationVersion: version, status: v.invalidated ? 'invalidated' : 'valid', created: v.created, invalidated: v.invalidated, entries: v.entries, verification: await verifyEvent(v.created) };
  save('vadyl-publication-' + version + '.json', new Blob([JSON.stringify(report, null, 2)], { type: 'application/json' }));
}
function pageDownloads() {
  $('#view').replaceChildren(el('h2', {}, 'Downloads'), el('div', { class: 'card' },
    el('p', {}, 'The whole history as canonical NDJSON with its signed checkpoint (what ', el('code', {}, 'vadyl audit verify'), ' reads).'),
    el('button', { type: 'button', class: 'primary', id: 'download-export', onclick: () => downloadExport().catch(showError) }, 'Download the export')));
}

// ---------- sign-in and routing ----------

function pageSignIn(message) {
  stopLive();
  for (const id of ['#nav', '#travel', '#trust']) $(id).hidden = true;
  const form = el('form', { class: 'signin card', id: 'signin' },
    el('h2', {}, 'Sign in'),
    el('p', { class: 'muted' }, 'The token stays in this tab only (sessionStorage) and is sent to this origin alone. The console only reads.'),
    el('label', { for: 'token' }, 'Token (auditor or admin)'),
    el('input', { id: 'token', type: 'password', autocomplete: 'off', value: S.token }),
    el('label', { for: 'pubkey' }, 'Registry verifier key to trust (from ', el('code', {}, 'vadyl key show'), ')'),
    el('input', { id: 'pubkey', autocomplete: 'off', value: S.key, placeholder: 'vadyl+1a2b3c4d+AW…' }),
    message ? el('p', { class: 'error', id: 'signin-error' }, message) : null,
    el('p', {}, el('button', { type: 'submit', class: 'primary', id: 'signin-submit' }, 'Sign in')));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    S.token = $('#token').value.trim();
    S.key = $('#pubkey').value.trim();
    S.checkpoints.clear();
    verified.clear();
    try {
      await pinnedKey();
      await getJson('/events?limit=1');
    } catch (e) {
      pageSignIn(e instanceof ApiError ? 'the server refused the token: ' + e.message : e.message);
      return;
    }
    sessionStorage.setItem('vadyl.token', S.token);
    sessionStorage.setItem('vadyl.key', S.key);
    if (!location.hash || location.hash === '#/signin') location.hash = '#/timeline'; else render();
  });
  $('#view').replaceChildren(form);
}

async function checkTrust() {
  const badgeEl = $('#trust-badge'), detail = $('#trust-detail');
  try {
    const note = await getText('/audit/checkpoint');
    const cp = await verifyCheckpoint(note);
    badgeEl.className = 'badge verified';
    badgeEl.textContent = 'checkpoint verified';
    detail.textContent = cp.origin + ': ' + cp.size + ' events, signed by ' + cp.signer + ' (Ed25519, checked in this page)';
  } catch (e) {
    badgeEl.className = e instanceof ApiError && e.status === 404 ? 'badge pending' : 'badge failed';
    badgeEl.textContent = e instanceof ApiError && e.status === 404 ? 'no checkpoint yet' : 'checkpoint failed';
    detail.textContent = e.message;
  }
}

function showError(e) {
  if (e instanceof ApiError && e.status === 401) { pageSignIn('the token is no longer accepted: ' + e.message); return; }
  $('#view').append(el('p', { class: 'error' }, e.message));
}

async function render() {
  if (!S.token || !S.key) { pageSignIn(); return; }
  for (const id of ['#nav', '#travel', '#trust']) $(id).hidden = false;
  stopLive();
  const [route, query] = (location.hash.slice(1) || '/timeline').split('?');
  const parts = route.split('/').filter(Boolean).map(decodeURIComponent);
  const params = new URLSearchParams(query || '');
  try {
    await refreshHead();
    checkTrust();
    switch (parts[0]) {
      case 'publications': await pagePublications(); break;
      case 'publication': await pagePublication(Number(parts[1])); break;
      case 'implementation': await pageImplementation(parts[1]); break;
      case 'project': await pageProject(parts[1]); break;
      case 'diff': await pageDiff(parts[1] && Number(parts[1]), parts[2] && Number(parts[2])); await showTravel(); break;
      case 'downloads': pageDownloads(); await showTravel(); break;
      default: await showTravel(); await pageTimeline(params);
    }
  } catch (e) {
    showError(e);
  }
}

function start() {
  $('#signout').addEventListener('click', () => {
    sessionStorage.removeItem('vadyl.token');
    S.token = '';
    pageSignIn();
  });
  const slider = $('#at-slider');
  slider.addEventListener('change', () => setAt(Number(slider.value) >= S.head ? null : Number(slider.value)));
  slider.addEventListener('input', () => { $('#at-position').value = slider.value; });
  $('#at-position').addEventListener('change', (ev) => {
    const v = ev.target.value.trim();
    setAt(v === '' ? null : Number(v));
  });
  $('#at-date').addEventListener('change', async (ev) => {
    if (!ev.target.value) { setAt(null); return; }
    const iso = new Date(ev.target.value + 'Z').toISOString().replace('.000Z', 'Z');
    setAt(await positionAtDate(iso));
  });
  $('#at-now').addEventListener('click', () => setAt(null));
  window.addEventListener('hashchange', render);
  render();
}

document.addEventListener('DOMContentLoaded', start);
