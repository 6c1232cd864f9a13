// The sendense-restore web page: sign in with an API token, pick a backup,
// browse its folders, download files and folders (zip) with progress.
//
// Plain JavaScript, no build step, no external assets: the server sends
// `Content-Security-Policy: default-src 'self'`. Every name from a backup is
// guest data and hostile: it only ever goes into the page through
// textContent, attributes set with DOM calls, or URL encoding; never as HTML.
//
// Navigation lives in the URL fragment, `#b=<backup id>&p=<path>`, so
// back/forward work and a link opens a folder directly. `#token=<secret>`
// signs in with that token and is removed from the address bar at once.
'use strict';

const API = '/api/v1';
const PAGE_SIZE = 1000;        // entries per `files` request (server default and max 10000)
const JOB_POLL_MS = 500;
const JOB_WAIT_MS = 30000;     // how long a job id may stay unknown before we give up showing progress

const $ = (id) => document.getElementById(id);

// ------------------------------------------------------------------ API

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// Calls the JSON API; throws ApiError with the server's `error` text.
async function api(path, { method = 'GET', body } = {}) {
  const init = { method, credentials: 'same-origin', headers: { Accept: 'application/json' } };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(API + path, init);
  } catch (e) {
    throw new ApiError(0, 'network', 'The server cannot be reached (' + e.message + ').');
  }
  if (res.status === 204) return null;
  let data = null;
  try {
    data = await res.json();
  } catch (e) {
    data = null;
  }
  if (!res.ok) {
    const text = data && typeof data.error === 'string' ? data.error : res.status + ' ' + res.statusText;
    const code = data && typeof data.code === 'string' ? data.code : 'http_' + res.status;
    throw new ApiError(res.status, code, text);
  }
  if (data === null) throw new ApiError(res.status, 'bad_response', 'The server sent an unreadable answer.');
  return data;
}

const enc = encodeURIComponent;

// "/backups/<id>/<what>?<params>" (for api()); backupUrl() is the same with /api/v1 (for links).
function backupPath(id, what, params) {
  return '/backups/' + enc(id) + '/' + what + '?' + new URLSearchParams(params).toString();
}

function backupUrl(id, what, params) {
  return API + backupPath(id, what, params);
}

// ------------------------------------------------------------------ paths and the fragment

// "/part1//etc/" -> "/part1/etc"; "" -> "/". Names are kept as they are
// (the server refuses what leaves the backup).
function normPath(p) {
  const parts = String(p || '').split('/').filter((s) => s !== '');
  return '/' + parts.join('/');
}

function joinPath(dir, name) {
  return dir === '/' ? '/' + name : dir + '/' + name;
}

function readHash() {
  const params = new URLSearchParams(location.hash.replace(/^#/, ''));
  return { token: params.get('token'), backup: params.get('b'), path: params.get('p') };
}

function fragment(params) {
  // '/' is allowed in a fragment: keep paths readable.
  const s = params.toString().replace(/%2F/gi, '/');
  return s ? '#' + s : '';
}

function hashFor(backup, path) {
  const params = new URLSearchParams();
  params.set('b', backup);
  if (path && path !== '/') params.set('p', path);
  return fragment(params);
}

// ------------------------------------------------------------------ formatting

function humanSize(n) {
  if (typeof n !== 'number' || !isFinite(n)) return '';
  if (n < 1024) return n + ' B';
  const units = ['KiB', 'MiB', 'GiB', 'TiB', 'PiB', 'EiB'];
  let v = n;
  let i = -1;
  do {
    v /= 1024;
    i++;
  } while (v >= 1024 && i < units.length - 1);
  return (v < 10 ? v.toFixed(1) : String(Math.round(v))) + ' ' + units[i];
}

// ISO-8601 -> "2026-01-01 00:00:00" (UTC, as the column header says).
function formatTime(iso, withSeconds = true) {
  const d = new Date(iso);
  if (typeof iso !== 'string' || isNaN(d.getTime())) return iso == null ? '' : String(iso);
  return d.toISOString().slice(0, withSeconds ? 19 : 16).replace('T', ' ');
}

// type + "0755" -> "drwxr-xr-x" (setuid/setgid/sticky as s/S, t/T).
function modeString(type, mode) {
  const m = parseInt(mode, 8);
  if (isNaN(m)) return String(mode || '');
  const kind = { dir: 'd', symlink: 'l', file: '-' }[type] || '?';
  let s = '';
  const rwx = 'rwxrwxrwx';
  for (let i = 0; i < 9; i++) s += m & (1 << (8 - i)) ? rwx[i] : '-';
  const special = (pos, bit, lower, upper) => {
    if (m & bit) s = s.slice(0, pos) + (s[pos] === 'x' ? lower : upper) + s.slice(pos + 1);
  };
  special(2, 0o4000, 's', 'S');
  special(5, 0o2000, 's', 'S');
  special(8, 0o1000, 't', 'T');
  return kind + s;
}

// Builds an element; `text` goes in through textContent only.
function el(tag, { cls, text, attrs } = {}, children = []) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  if (attrs) for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  for (const c of children) node.append(c);
  return node;
}

// ------------------------------------------------------------------ messages

function showError(message) {
  const box = $('error');
  box.textContent = message;
  box.hidden = !message;
}

function clearError() {
  showError('');
}

function handleError(e) {
  if (e instanceof ApiError && e.status === 401) {
    showSignIn(e.message);
    return;
  }
  showError(e && e.message ? e.message : String(e));
}

// ------------------------------------------------------------------ state

const state = {
  me: null,
  backups: new Map(),   // id -> backup
  seq: 0,               // the newest folder request; older answers are dropped
  view: null,           // {backup, path, entries, loaded, total}
  job: null,            // {id, timer, frame, started, backup, path}
};

// ------------------------------------------------------------------ sign-in

function showSignIn(message) {
  stopJob();
  state.me = null;
  state.view = null;
  $('app').hidden = true;
  $('who').hidden = true;
  $('signin').hidden = false;
  showError(message || '');
  $('token').value = '';
  $('token').focus();
}

async function signIn(token) {
  await api('/session', { method: 'POST', body: { token } });
}

async function signOut() {
  stopJob();
  try {
    await api('/session', { method: 'DELETE' });
  } catch (e) {
    // Signing out only clears the cookie; show the form whatever happened.
  }
  history.replaceState(null, '', location.pathname + location.search);
  showSignIn('');
}

// After a sign-in (or a page load with a valid cookie): who, backups, route.
async function enter({ quietUnauthorized = false } = {}) {
  try {
    state.me = await api('/whoami');
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) showSignIn(quietUnauthorized ? '' : e.message);
    else handleError(e);
    return;
  }
  const me = state.me;
  $('who-text').textContent = me.operator
    ? 'Signed in as operator (' + (me.token_id || '') + ')'
    : 'Signed in as ' + (me.tenant || '?') + ' (' + (me.token_id || '') + ')';
  $('who').hidden = false;
  $('signin').hidden = true;
  $('app').hidden = false;
  clearError();
  try {
    await loadBackups();
  } catch (e) {
    handleError(e);
    return;
  }
  await route();
}

// `#token=...` in the address: sign in with it and drop it from the address
// bar (and from history) before anything else happens.
async function takeTokenFromHash() {
  const params = new URLSearchParams(location.hash.replace(/^#/, ''));
  const token = params.get('token');
  if (token === null) return false;
  params.delete('token');
  history.replaceState(null, '', location.pathname + location.search + fragment(params));
  try {
    await signIn(token);
  } catch (e) {
    showSignIn(e.message);
    return true;
  }
  await enter();
  return true;
}

// ------------------------------------------------------------------ backups

async function loadBackups() {
  const data = await api('/backups');
  state.backups = new Map();
  for (const b of data.backups || []) state.backups.set(b.id, b);
  renderBackups();
}

function renderBackups() {
  const list = $('backup-list');
  list.replaceChildren();
  const byVm = new Map();
  for (const b of state.backups.values()) {
    if (!byVm.has(b.vm)) byVm.set(b.vm, []);
    byVm.get(b.vm).push(b);
  }
  $('backups-empty').hidden = byVm.size > 0;
  const vms = [...byVm.keys()].sort();
  for (const vm of vms) {
    const backups = byVm.get(vm).sort((a, b) => (a.created_at < b.created_at ? 1 : a.created_at > b.created_at ? -1 : 0));
    const ul = el('ul', { cls: 'backup-list' });
    for (const b of backups) {
      const a = el('a', { cls: 'backup', attrs: { href: hashFor(b.id, '/'), title: b.id } }, [
        el('span', { cls: 'backup-time', text: formatTime(b.created_at, false) }),
        el('span', { cls: 'kind kind-' + (b.kind === 'full' ? 'full' : 'incremental'), text: b.kind || '' }),
      ]);
      a.dataset.backup = b.id;
      ul.append(el('li', {}, [a]));
    }
    list.append(el('section', { cls: 'vm' }, [el('h3', { text: vm }), ul]));
  }
  markSelected();
}

function markSelected() {
  const current = state.view ? state.view.backup : readHash().backup;
  for (const a of document.querySelectorAll('#backup-list a.backup')) {
    if (a.dataset.backup === current) a.setAttribute('aria-current', 'true');
    else a.removeAttribute('aria-current');
  }
}

// ------------------------------------------------------------------ folders

async function route({ focus = false } = {}) {
  if (state.me === null) return;
  const h = readHash();
  if (!h.backup) {
    state.view = null;
    state.seq++;
    markSelected();
    $('pick').hidden = false;
    $('folder').hidden = true;
    return;
  }
  await openFolder(h.backup, normPath(h.path), focus);
}

async function openFolder(backup, path, focus) {
  const seq = ++state.seq;
  state.view = { backup, path, entries: [], loaded: 0, total: 0 };
  markSelected();
  $('pick').hidden = true;
  $('folder').hidden = false;
  renderCrumbs(backup, path);
  $('rows').replaceChildren();
  $('count').textContent = '';
  $('more').hidden = true;
  $('loading').hidden = false;
  $('zip').disabled = true;
  try {
    const data = await api(backupPath(backup, 'files', { path, offset: 0, limit: PAGE_SIZE }));
    if (seq !== state.seq) return;
    clearError();
    addPage(data);
    $('zip').disabled = state.job !== null;
    if (focus) {
      const here = document.querySelector('#crumbs [aria-current]');
      if (here) here.focus();
    }
  } catch (e) {
    if (seq !== state.seq) return;
    handleError(e);
  } finally {
    if (seq === state.seq) $('loading').hidden = true;
  }
}

async function loadMore() {
  const view = state.view;
  if (!view) return;
  const seq = state.seq;
  $('more').disabled = true;
  $('loading').hidden = false;
  try {
    const data = await api(backupPath(view.backup, 'files', { path: view.path, offset: view.loaded, limit: PAGE_SIZE }));
    if (seq !== state.seq) return;
    addPage(data);
  } catch (e) {
    if (seq === state.seq) handleError(e);
  } finally {
    $('more').disabled = false;
    if (seq === state.seq) $('loading').hidden = true;
  }
}

// Folders first, then everything else; within each, the server's order
// (by name, bytewise). Array.prototype.sort is stable. With more than one
// page, the folders of every page loaded so far come first.
function sortEntries(entries) {
  return entries.sort((a, b) => (a.type === 'dir' ? 0 : 1) - (b.type === 'dir' ? 0 : 1));
}

function addPage(data) {
  const view = state.view;
  const entries = Array.isArray(data.entries) ? data.entries : [];
  view.entries = sortEntries(view.entries.concat(entries));
  view.loaded += entries.length;
  view.total = typeof data.total === 'number' ? data.total : view.loaded;
  renderRows();
}

function renderRows() {
  const view = state.view;
  const rows = document.createDocumentFragment();
  for (const e of view.entries) rows.append(entryRow(e, view.backup, view.path));
  if (view.entries.length === 0) {
    rows.append(el('tr', { cls: 'empty' }, [el('td', { text: 'This folder is empty.', attrs: { colspan: '5' } })]));
  }
  $('rows').replaceChildren(rows);
  const shown = view.entries.length;
  $('count').textContent = shown < view.total
    ? shown + ' of ' + view.total + ' entries'
    : view.total + (view.total === 1 ? ' entry' : ' entries');
  const left = view.total - view.loaded;
  $('more').hidden = left <= 0 || view.loaded === 0;
  $('more').textContent = 'Show more (' + Math.min(left, PAGE_SIZE) + ' of ' + left + ' not shown yet)';
  $('listing-caption').textContent = 'Contents of ' + view.path;
}

const TYPE_WORDS = { dir: 'folder', file: 'file', symlink: 'symbolic link', other: 'special file' };

function entryRow(e, backup, folder) {
  const type = Object.prototype.hasOwnProperty.call(TYPE_WORDS, e.type) ? e.type : 'other';
  const name = String(e.name);
  const full = joinPath(folder, name);
  const tr = el('tr', { cls: 'type-' + type });

  const nameCell = el('td', { cls: 'col-name' });
  nameCell.append(el('span', { cls: 'icon icon-' + type, attrs: { 'aria-hidden': 'true' } }));
  const label = el('span', { cls: 'name', text: name });
  const hint = el('span', { cls: 'visually-hidden', text: ' (' + TYPE_WORDS[type] + ')' });
  if (type === 'dir') {
    nameCell.append(el('a', { attrs: { href: hashFor(backup, full) } }, [label, hint]));
  } else if (type === 'file') {
    const a = el('a', { cls: 'download', attrs: { href: backupUrl(backup, 'download', { path: full }), download: '' } },
      [label, el('span', { cls: 'visually-hidden', text: ' (file, download)' })]);
    nameCell.append(a);
  } else if (type === 'symlink') {
    nameCell.append(label, hint, el('span', { cls: 'arrow', text: ' → ', attrs: { 'aria-hidden': 'true' } }),
      el('span', { cls: 'target', text: String(e.target ?? ''), attrs: { title: 'link target (not followed)' } }));
  } else {
    nameCell.append(label, hint);
  }
  tr.append(nameCell);

  const sizeCell = el('td', { cls: 'col-size' });
  if (type === 'file') {
    sizeCell.textContent = humanSize(e.size);
    sizeCell.title = Number(e.size).toLocaleString('en') + ' bytes';
  }
  tr.append(sizeCell);
  tr.append(el('td', { cls: 'col-date', text: formatTime(e.mtime) }));
  tr.append(el('td', { cls: 'col-mode' }, [el('code', { text: modeString(type, e.mode) })]));
  tr.append(el('td', { cls: 'col-owner', text: String(e.uid) + ':' + String(e.gid) }));
  return tr;
}

function renderCrumbs(backup, path) {
  const ol = $('crumbs');
  ol.replaceChildren();
  const b = state.backups.get(backup);
  const rootText = b ? b.vm + ' · ' + formatTime(b.created_at, false) + ' UTC · ' + b.kind : backup;
  const parts = path.split('/').filter((s) => s !== '');
  const crumbs = [{ text: rootText, path: '/', title: backup }];
  let acc = '';
  for (const p of parts) {
    acc += '/' + p;
    crumbs.push({ text: p, path: acc });
  }
  crumbs.forEach((c, i) => {
    const last = i === crumbs.length - 1;
    const node = last
      ? el('span', { text: c.text, attrs: { 'aria-current': 'page', tabindex: '-1' } })
      : el('a', { text: c.text, attrs: { href: hashFor(backup, c.path) } });
    if (c.title) node.title = c.title;
    ol.append(el('li', {}, [node]));
  });
}

// ------------------------------------------------------------------ folder as zip, with progress

// 18 random bytes -> 24 characters of [A-Za-z0-9_-]: the job id we propose
// (`job=`), so progress can be polled while the browser holds the download.
function newJobId() {
  const bytes = new Uint8Array(18);
  crypto.getRandomValues(bytes);
  return btoa(String.fromCharCode(...bytes)).replace(/\+/g, '-').replace(/\//g, '_');
}

async function startZip() {
  const view = state.view;
  if (!view || state.job) return;
  const proposed = newJobId();
  const url = backupUrl(view.backup, 'archive', { path: view.path, format: 'zip', job: proposed });
  const folderName = view.path === '/' ? view.backup : view.path.split('/').pop();
  const job = { id: proposed, proposed, backup: view.backup, path: view.path, frame: null,
                started: Date.now(), timer: 0, seen: false, known: null };
  state.job = job;
  $('zip').disabled = true;
  $('job').hidden = false;
  delete $('job').dataset.state;
  $('job-title').textContent = 'Zip of ' + folderName + ':';
  $('job-bar').removeAttribute('value');   // indeterminate until the first answer
  $('job-text').textContent = 'starting…';
  // The jobs that exist before ours: should the server not take the id we
  // propose (in use, or an older server), ours is the new one for this folder.
  try {
    const before = await api('/jobs');
    job.known = new Set((before.jobs || []).map((j) => j.id));
  } catch (e) {
    job.known = null;
  }
  if (state.job !== job) return;
  // A hidden frame: a successful answer is an attachment (the browser saves
  // it, the page stays); an error answer is JSON that loads in the frame,
  // where we read its `error` text.
  const frame = el('iframe', { cls: 'archive-frame', attrs: { title: 'archive download', hidden: '' } });
  frame.addEventListener('load', () => archiveFrameLoaded(proposed, frame));
  document.body.append(frame);
  job.frame = frame;
  frame.src = url;
  job.timer = setTimeout(pollJob, JOB_POLL_MS);
}

// The job the server made for our request when it did not take our id.
async function findOurJob(job) {
  if (!job.known) return null;
  const now = await api('/jobs');
  const ours = (now.jobs || []).filter((j) => !job.known.has(j.id) && j.backup_id === job.backup &&
                                             j.path === job.path && j.format === 'zip');
  return ours.length === 1 ? ours[0] : null;
}

function archiveFrameLoaded(proposed, frame) {
  const job = state.job;
  if (!job || job.proposed !== proposed) return;
  let message = '';
  try {
    const doc = frame.contentDocument;
    const pre = doc ? doc.querySelector('pre') : null;   // Chromium shows JSON in a <pre>
    const text = pre ? pre.textContent : doc && doc.body ? doc.body.textContent : '';
    if (!text) return;   // about:blank
    const data = JSON.parse(text);
    message = typeof data.error === 'string' ? data.error : 'The archive could not be made.';
    if (data.code === 'unauthorized') {
      showSignIn(message);
      return;
    }
  } catch (e) {
    message = 'The archive could not be made.';
  }
  finishJob('failed', message);
  showError(message);
}

async function pollJob() {
  const job = state.job;
  if (!job) return;
  job.timer = 0;
  try {
    const j = await api('/jobs/' + enc(job.id));
    if (state.job !== job) return;
    job.seen = true;
    showJobProgress(j);
    if (j.state === 'running') {
      job.timer = setTimeout(pollJob, JOB_POLL_MS);
    } else if (j.state === 'done') {
      finishJob('done', 'done: ' + progressText(j));
    } else {
      finishJob(j.state, j.state + ' after ' + progressText(j));
    }
  } catch (e) {
    if (state.job !== job) return;
    if (e instanceof ApiError && e.status === 401) {
      showSignIn(e.message);
      return;
    }
    if (e instanceof ApiError && e.status === 404 && !job.seen && Date.now() - job.started < JOB_WAIT_MS) {
      try {
        const other = await findOurJob(job);
        if (state.job !== job) return;
        if (other) job.id = other.id;
      } catch (e2) {
        // keep waiting for our id
      }
      job.timer = setTimeout(pollJob, JOB_POLL_MS);   // not started yet
      return;
    }
    finishJob('unknown', job.seen ? 'progress no longer available' : 'the download runs, progress is not available');
  }
}

function progressText(j) {
  return j.files_done + ' of ' + j.files_total + ' files, ' +
    humanSize(j.bytes_done) + ' of ' + humanSize(j.bytes_total);
}

function showJobProgress(j) {
  const bar = $('job-bar');
  const total = j.bytes_total > 0 ? j.bytes_total : j.files_total;
  const done = j.bytes_total > 0 ? j.bytes_done : j.files_done;
  if (total > 0) {
    bar.max = total;
    bar.value = Math.min(done, total);
  } else {
    bar.max = 1;
    bar.value = j.state === 'running' ? 0 : 1;
  }
  $('job-text').textContent = progressText(j);
}

function finishJob(result, text) {
  const job = state.job;
  if (!job) return;
  if (job.timer) clearTimeout(job.timer);
  state.job = null;
  $('job').dataset.state = result;
  $('job-text').textContent = text;
  if (result === 'done') {
    $('job-bar').max = 1;
    $('job-bar').value = 1;
  } else if (!$('job-bar').hasAttribute('value')) {
    $('job-bar').value = 0;
  }
  $('zip').disabled = state.view === null;
  // The frame has handed the download to the browser; drop it later.
  if (job.frame) setTimeout(() => job.frame.remove(), 60000);
}

function stopJob() {
  const job = state.job;
  if (!job) return;
  if (job.timer) clearTimeout(job.timer);
  state.job = null;
  $('job').hidden = true;
}

// ------------------------------------------------------------------ start

function wire() {
  $('signin-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const token = $('token').value.trim();
    if (!token) return;
    try {
      await signIn(token);
    } catch (e) {
      showSignIn(e.message);
      return;
    }
    $('token').value = '';
    await enter();
  });
  $('signout').addEventListener('click', signOut);
  $('more').addEventListener('click', loadMore);
  $('zip').addEventListener('click', startZip);
  window.addEventListener('hashchange', async () => {
    if (await takeTokenFromHash()) return;
    await route({ focus: true });
  });
}

async function main() {
  wire();
  if (await takeTokenFromHash()) return;
  await enter({ quietUnauthorized: true });
}

main();
