// The page: collects inputs and files, hands the job to the worker, shows progress. Credentials
// live in this page's memory only and go to the worker with the job; nothing is stored.
const $ = (id) => document.getElementById(id);
const newWorker = () => new Worker('worker.js', { type: 'module' });
let worker = newWorker();
let picked = []; // [{file, name, root}]: root is the folder a file came in (null: dropped alone)
// the job running (the base's layers or a push): aborting it stops its probes; see cancel()
let busy = null;

const human = (n) => {
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${u[i]}`;
};
const log = (m) => { $('log').textContent += m + '\n'; };

// one row per file: its name and size, a button to remove it, and (once the job runs) its own
// bar with bytes, rate, ETA
let rows = new Map(); // name -> { bar, stat, size, t0 }
function showFiles() {
  const ul = $('filelist');
  ul.innerHTML = '';
  rows = new Map();
  for (const p of picked) {
    const li = document.createElement('li');
    const label = document.createElement('span');
    label.textContent = `${p.name} (${human(p.file.size)})`;
    const bar = document.createElement('progress');
    bar.max = Math.max(p.file.size, 1);
    bar.value = 0;
    bar.setAttribute('aria-label', `${p.name} uploaded`);
    const rm = document.createElement('button');
    rm.type = 'button';
    rm.className = 'remove';
    rm.textContent = '×';
    rm.title = `Remove ${p.name}`;
    rm.setAttribute('aria-label', rm.title);
    rm.disabled = !!busy;
    rm.addEventListener('click', () => { picked = picked.filter((q) => q !== p); showFiles(); });
    const stat = document.createElement('span');
    stat.className = 'small';
    li.append(label, bar, rm, stat);
    ul.appendChild(li);
    rows.set(p.name, { bar, stat, size: p.file.size, t0: 0 });
  }
  updatePreview();
}

function fileProgress(files) {
  const now = performance.now();
  for (const f of files || []) {
    const r = rows.get(f.name);
    if (!r) continue;
    if (f.done > 0 && !r.t0) r.t0 = now;
    r.bar.value = f.done;
    if (f.done >= f.size) { r.stat.textContent = 'done'; continue; }
    const secs = r.t0 ? (now - r.t0) / 1000 : 0;
    const rate = secs > 0.2 ? f.done / secs : 0;
    r.stat.textContent = `${human(f.done)} of ${human(f.size)}` +
      (rate ? ` · ${human(rate)}/s · ETA ${((f.size - f.done) / rate).toFixed(0)} s` : '');
  }
}

// a dropped folder: walk its entries (files keep their relative paths; `root` is the folder
// dropped, whose contents a ModelPack holds)
async function walkEntry(entry, prefix, out, root) {
  if (entry.isFile) {
    const file = await new Promise((res, rej) => entry.file(res, rej));
    out.push({ file, name: prefix + entry.name, root });
  } else if (entry.isDirectory) {
    const reader = entry.createReader();
    for (;;) {
      const batch = await new Promise((res, rej) => reader.readEntries(res, rej));
      if (!batch.length) break;
      for (const e of batch) await walkEntry(e, prefix + entry.name + '/', out, root ?? entry.name);
    }
  }
}

async function addDropped(dt) {
  const out = [];
  const entries = [...(dt.items || [])]
    .map((it) => (it.webkitGetAsEntry ? it.webkitGetAsEntry() : null))
    .filter(Boolean);
  if (entries.length) {
    for (const e of entries) await walkEntry(e, '', out, null);
  } else {
    for (const f of dt.files) out.push({ file: f, name: f.name, root: null });
  }
  picked.push(...out);
  showFiles();
}

const drop = $('drop');
drop.addEventListener('click', () => $('files').click());
drop.addEventListener('keydown', (e) => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); $('files').click(); } });
drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', (e) => { e.preventDefault(); drop.classList.remove('over'); addDropped(e.dataTransfer); });
for (const id of ['files', 'folder']) {
  $(id).addEventListener('change', (e) => {
    for (const f of e.target.files) {
      const rel = f.webkitRelativePath;
      picked.push({ file: f, name: rel || f.name, root: rel ? rel.split('/')[0] : null });
    }
    e.target.value = '';
    showFiles();
  });
}

// The layout chosen: weights (on a base), modelcar (on a base) or modelpack (no base).
const layout = () => document.querySelector('input[name=layout]:checked').value;
// A ModelPack needs no base image, no compression (its layers are the files) and no card (the
// README is a layer of its own): those fields go, its own come.
function layoutChanged() {
  const pack = layout() === 'modelpack';
  $('baserow').hidden = $('show').hidden = $('cardrow').hidden = $('compressionrow').hidden = pack;
  $('base').required = !pack;
  $('packrow').hidden = !pack;
  $('go').textContent = pack ? 'Pack the files and push' : 'Add the layer and push';
  updatePreview();
}
// A file tree (entries as `lamina ls --json` gives them, in path order) into `box`: a directory
// is a <details> whose children are made when it is first opened, so a base of many thousand
// files costs nothing until it is looked at. Entries of layer `newFrom` and above are marked
// new, and the directories holding them start open.
function renderTree(box, entries, newFrom = Infinity) {
  const kids = new Map(); // dir path -> its entries
  const holdsNew = new Set();
  for (const e of entries) {
    const i = e.path.lastIndexOf('/');
    const dir = i < 0 ? '' : e.path.slice(0, i);
    if (!kids.has(dir)) kids.set(dir, []);
    kids.get(dir).push(e);
    if (e.layer !== null && e.layer >= newFrom) {
      for (let d = dir; ; d = d.slice(0, Math.max(d.lastIndexOf('/'), 0))) {
        holdsNew.add(d);
        if (!d) break;
      }
    }
  }
  const level = (dir) => {
    const ul = document.createElement('ul');
    for (const e of kids.get(dir) || []) {
      const li = document.createElement('li');
      // (what ls --json says of it, for scripts and tests reading the page)
      Object.assign(li.dataset, { path: e.path, type: e.type, size: e.size, mode: e.mode, layer: e.layer ?? '', link: e.link ?? '' });
      if (e.layer !== null && e.layer >= newFrom) li.className = 'new';
      const name = document.createElement('span');
      name.className = 'name';
      const base = e.path.slice(e.path.lastIndexOf('/') + 1);
      const meta = document.createElement('span');
      meta.className = 'meta';
      const from = e.layer === null ? '' : ` · layer ${e.layer}`;
      if (e.type === 'dir') {
        const n = (kids.get(e.path) || []).length;
        name.textContent = `${base}/`;
        meta.textContent = `${n} item${n === 1 ? '' : 's'}${from}`;
        const det = document.createElement('details');
        const sum = document.createElement('summary');
        sum.append(name, meta);
        det.append(sum);
        det.addEventListener('toggle', () => {
          if (det.open && det.children.length === 1) det.append(level(e.path));
        });
        li.append(det);
        if (holdsNew.has(e.path)) det.open = true;
      } else {
        name.textContent = e.link ? `${base} → ${e.link}` : base;
        meta.textContent = `${e.type === 'file' ? human(e.size) : e.type} · ${e.mode}${from}`;
        li.append(name, meta);
      }
      ul.append(li);
    }
    return ul;
  };
  box.replaceChildren(level(''));
}

// The base's files as "Show the base's layers and files" last read them (for the preview).
let baseFiles = null; // { ref, entries, layers }

// What the destination will hold, worked out by the wasm (the same planning the upload runs)
// on a worker of its own, so that it never waits for a job: shown once there are files and,
// for a layout on a base, the base's files have been read.
const previewer = newWorker();
let previewId = 0;
previewer.onmessage = ({ data }) => {
  if (data.type !== 'previewed' || data.id !== previewId) return; // an older preview's answer
  const stat = $('previewstat');
  if (data.error) {
    stat.textContent = `No preview: ${data.error}`;
    $('previewtree').replaceChildren();
    return;
  }
  const { entries, layers, leftOut } = data.result;
  const pack = layout() === 'modelpack';
  const files = entries.filter((e) => e.type !== 'dir');
  const added = files.filter((e) => layers.some((l) => l.index === e.layer));
  const bytes = (es) => es.reduce((n, e) => n + e.size, 0);
  stat.textContent = pack
    ? `${files.length} file${files.length === 1 ? '' : 's'} (${human(bytes(files))}), one layer each` +
      (leftOut.length ? `; left out (hidden or a cache): ${leftOut.join(', ')}` : '')
    : `${files.length} files and links (${human(bytes(files))}); new in ` +
      `${layers.length === 1 ? `layer ${layers[0].index}` : `layers ${layers[0].index}–${layers[layers.length - 1].index}`}` +
      ` (marked): ${added.length} file${added.length === 1 ? '' : 's'}, ${human(bytes(added))}`;
  renderTree($('previewtree'), entries, pack ? -1 : layers[0]?.index ?? Infinity);
};
function updatePreview() {
  const pack = layout() === 'modelpack';
  const box = $('previewinfo');
  const base = $('base').value.trim();
  const known = baseFiles && baseFiles.ref === base;
  if (!picked.length || (!pack && !known)) {
    box.hidden = true;
    previewId++;
    return;
  }
  const modelcar = layout() === 'modelcar';
  const card = modelcar ? $('card').files[0] : null;
  const ask = {
    layout: layout(),
    path: $('path').value.trim() || '/src/weights',
    base: pack ? [] : baseFiles.entries,
    base_layers: pack ? 0 : baseFiles.layers,
    files: picked.map((p) => ({ name: p.name, size: p.file.size, root: p.root ?? null })),
    card: card ? { name: card.name, size: card.size } : null,
  };
  box.hidden = false;
  $('previewstat').textContent = 'Working it out…';
  previewer.postMessage({ type: 'preview', id: ++previewId, ask });
}
$('path').addEventListener('input', updatePreview);
$('card').addEventListener('change', updatePreview);
$('base').addEventListener('input', updatePreview);

for (const r of document.querySelectorAll('input[name=layout]')) r.addEventListener('change', layoutChanged);
layoutChanged();

// Where short names go (no registry host in front), as the CLI's default.
const DEFAULT_REGISTRY = 'r8.im';

// The registry host a reference names, or null for a short name.
function hostOf(ref) {
  const first = ref.replace(/^https?:\/\//, '').split('/')[0];
  return /[.:]|^localhost$/.test(first) ? first : null;
}
// ... normalised as the core names it (Docker Hub is docker.io)
const registryOf = (ref) => {
  const h = (hostOf(ref) || DEFAULT_REGISTRY).toLowerCase();
  return /^(index\.|registry-1\.)?docker\.io$/.test(h) ? 'docker.io' : h;
};

// An error whose message is already what the page shows.
const said = (message) => Object.assign(new Error(message), { said: true });
const CANCELLED = 'cancelled';

// A GET that gives up after 10 s, or when the job is cancelled.
async function probe(url, init = {}) {
  const c = new AbortController();
  const stop = () => c.abort();
  const t = setTimeout(stop, 10000);
  busy.signal.addEventListener('abort', stop);
  try {
    return await fetch(url, { ...init, cache: 'no-store', signal: c.signal });
  } catch (e) {
    if (busy.signal.aborted) throw said(CANCELLED);
    throw new Error(c.signal.aborted ? 'no answer within 10 s' : e.message);
  } finally {
    clearTimeout(t);
    busy.signal.removeEventListener('abort', stop);
  }
}

// Before anything is sent: says where a short name goes, and checks that the page can talk to
// each registry. Registries that send CORS headers are used directly; for the others the page
// goes through the same-origin proxy of the edge worker (/proxy/<url>), when it is served by
// it. Gives the proxy prefix ('' for none), or fails at once saying why.
async function route(refs) {
  let proxy = '';
  const seen = new Set();
  for (const [role, ref] of refs) {
    const host = hostOf(ref);
    if (!host) log(`${ref} has no registry host: it goes to ${DEFAULT_REGISTRY}, as with the CLI (write another registry's host in front to use it)`);
    const reg = registryOf(ref);
    if (seen.has(reg)) continue;
    seen.add(reg);
    const api = reg === 'docker.io' ? 'registry-1.docker.io' : reg;
    const scheme = ref.startsWith('http://') || /^(127\.|localhost)/.test(api) ? 'http' : 'https';
    const v2 = `${scheme}://${api}/v2/`;
    $('phase').textContent = `Checking ${reg}…`;
    try {
      await probe(v2);
      continue;
    } catch (e) {
      if (e.said) throw e;
    }
    // no answer the page may read: the registry is unreachable, or allows no cross-origin requests
    try {
      await probe(v2, { mode: 'no-cors' });
    } catch (e) {
      if (e.said) throw e;
      throw said(`The ${role}'s registry ${reg}${host ? '' : ` (where the short name ${ref} goes)`} could not be ` +
        `reached from this page (${e.message}): check the address and the network` +
        (host ? '.' : `, or write the registry's host in front of the name.`));
    }
    let r = null;
    try { r = await probe(`${location.origin}/proxy/${v2}`); } catch (e) { if (e.said) throw e; }
    // the edge worker's proxy passes the registry's answer to /v2/ on: 200 or 401
    if (r && (r.status === 401 || (r.ok && !/html/.test(r.headers.get('content-type') || '')))) {
      log(`${reg} does not allow this page (no CORS): using the proxy`);
      proxy = `${location.origin}/proxy`;
      continue;
    }
    const refused = r && r.status === 403 ? await r.json().then((j) => j.errors[0].message, () => '') : '';
    if (refused) throw said(`The ${role}'s registry ${reg} allows no cross-origin requests, and this page's proxy refuses it: ${refused}.`);
    throw said(`The ${role}'s registry ${reg} allows no cross-origin requests (it sends no CORS headers), ` +
      `and this page has no proxy to go through (${location.origin}/proxy/ answered ${r ? `HTTP ${r.status}` : 'nothing'}: ` +
      `the page is served by a plain static server). Serve the page from lamina's edge Worker, whose ` +
      `/proxy/ forwards to the registries on its ALLOWED_REGISTRIES, or enable CORS on the registry for ` +
      `${location.origin}.`);
  }
  return proxy;
}

// The job's options; `refs` are the images the job reads or writes, checked by route().
async function opts(refs) {
  const modelcar = layout() === 'modelcar';
  const pack = layout() === 'modelpack';
  const pass = $('password').value;
  const epoch = $('epoch').value.trim();
  if (pack && epoch && !/^\d{1,15}$/.test(epoch)) {
    throw said(`The files' time "${epoch}" is not a number of seconds since 1970 (the CLI's SOURCE_DATE_EPOCH): ` +
      'write whole seconds, or leave it empty for 0.');
  }
  const jobs = $('jobs').value.trim();
  if (pack && jobs && !/^[1-6]$/.test(jobs)) {
    throw said(`Files uploaded at once: "${jobs}" is not a whole number from 1 to 6 (a browser opens at most 6 connections to a registry).`);
  }
  return {
    base: pack ? '' : $('base').value.trim(),
    dest: $('dest').value.trim(),
    path: modelcar ? '/models' : $('path').value.trim() || '/src/weights',
    modelcar,
    compression: $('compression').value,
    username: $('username').value || null,
    password: $('username').value ? pass : null,
    token: !$('username').value && pass ? pass : null,
    registry: DEFAULT_REGISTRY,
    proxy: await route(refs),
    chunk_mib: 64,
    created: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
    format: 'modelpack',
    name: pack ? $('modelname').value.trim() || null : null,
    source_date_epoch: pack && epoch ? Number(epoch) : null,
    // a ModelPack's files upload this many at a time (lamina pack -j); its default when empty
    jobs: pack && jobs ? Number(jobs) : 4,
  };
}

function job(msg, onProgress) {
  return new Promise((resolve, reject) => {
    busy.reject = reject;
    worker.onmessage = (ev) => {
      const m = ev.data;
      if (m.type === 'progress') onProgress(m.data);
      else if (m.type === 'error') reject(Object.assign(new Error(m.message), m));
      else resolve(m.result);
    };
    worker.onerror = (e) => reject(new Error(`the page's worker failed: ${e.message}`));
    worker.postMessage(msg);
  });
}

// Stops the running job: its probes are aborted, and its worker (with the requests it has in
// flight) is terminated; a fresh worker takes the next job.
function cancel() {
  if (!busy) return;
  busy.abort();
  worker.terminate();
  worker = newWorker();
  busy.reject?.(said(CANCELLED));
}
$('cancel').addEventListener('click', cancel);

// leaving the page while a job runs would cut the upload and leave its session behind
const warn = (e) => { e.preventDefault(); e.returnValue = ''; };

// Runs a job: clears what earlier runs left (result, error, phase, log, tables, bars), offers
// Cancel meanwhile, and shows the job's error.
async function run(upload, body) {
  if (busy) return;
  busy = new AbortController();
  $('result').className = '';
  $('result').textContent = '';
  $('log').textContent = '';
  $('phase').textContent = '';
  $('baseinfo').hidden = true;
  document.querySelector('#baseinfo tbody').innerHTML = '';
  $('basetree').replaceChildren();
  $('treestat').textContent = '';
  $('progress').hidden = !upload;
  $('filebar').style.width = $('totalbar').style.width = '0%';
  $('filestat').textContent = $('totalstat').textContent = '';
  showFiles();
  $('go').disabled = $('show').disabled = true;
  $('cancel').hidden = false;
  for (const b of document.querySelectorAll('#filelist button.remove')) b.disabled = true;
  // (reading the base loses nothing when the page goes; an upload leaves its session behind)
  if (upload) window.addEventListener('beforeunload', warn);
  try {
    await body();
  } catch (err) {
    const cancelled = err.said && err.message === CANCELLED;
    $('result').className = cancelled ? '' : 'error';
    $('result').textContent = cancelled ? 'Cancelled: the job was stopped and nothing more is sent.' : explain(err);
    $('phase').textContent = cancelled ? 'Cancelled.' : 'Stopped: see the error below.';
  } finally {
    window.removeEventListener('beforeunload', warn);
    busy = null;
    $('go').disabled = $('show').disabled = false;
    $('cancel').hidden = true;
    for (const b of document.querySelectorAll('#filelist button.remove')) b.disabled = false;
  }
}

$('show').addEventListener('click', () => run(false, async () => {
  const base = $('base').value.trim();
  if (!base) throw said('Fill in the base image to see its layers.');
  const o = await opts([['base', base]]);
  // only the base is read; the destination matters only for credentials in the same registry
  if (!o.dest || registryOf(o.dest) !== registryOf(base)) o.dest = '';
  const info = await job({ type: 'inspect', opts: o }, (p) => { if (p.kind === 'log') log(p.message); });
  const tb = document.querySelector('#baseinfo tbody');
  info.layers.forEach((l, i) => {
    const tr = document.createElement('tr');
    for (const v of [i, l.digest.slice(7, 19), human(l.size), l.createdBy || '']) {
      const td = document.createElement('td');
      td.textContent = v;
      tr.appendChild(td);
    }
    tb.appendChild(tr);
  });
  $('baseinfo').hidden = false;
  // then its files, as a job of its own: Cancel stops it and the table stays
  $('treestat').textContent = 'Reading the base\'s files inside its layers (tar headers by range requests; a compressed layer is read whole)…';
  let ls;
  try {
    ls = await job({ type: 'files', opts: o }, (p) => { if (p.kind === 'log') log(p.message); });
  } catch (e) {
    $('treestat').textContent = e.said && e.message === CANCELLED
      ? 'Cancelled: the base\'s files were not read (its layers are listed above).'
      : 'The base\'s files could not be read: see the error below.';
    throw e;
  }
  const whole = info.layers.reduce((n, l) => n + l.size, 0);
  const r = ls.read;
  const read = r.rangeBytes + r.streamedBytes;
  $('treestat').textContent = `${ls.entries.length} entries. Read: ${r.rangeRequests} range request${r.rangeRequests === 1 ? '' : 's'} (${human(r.rangeBytes)})` +
    (r.streamedLayers.length ? `, compressed layer${r.streamedLayers.length === 1 ? '' : 's'} ${r.streamedLayers.join(', ')} streamed (${human(r.streamedBytes)})` : '') +
    `: ${human(read)} of the layers' ${human(whole)}.`;
  renderTree($('basetree'), ls.entries);
  baseFiles = { ref: base, entries: ls.entries, layers: info.layers.length };
  updatePreview();
}));

// The error as the page shows it: which registry failed (the base's or the destination's), and
// a class from its HTTP status (see page_error in web/src/lib.rs), never from the message text.
function explain(e) {
  if (e.said || !e.registry) return e.message;
  // the core's wording is the CLI's: say what to fill in on this page instead
  const m = e.message.replace(/ \(--username\/--password or docker login\)/, '');
  const reg = e.registry;
  // (a ModelPack reads no base)
  const isBase = layout() !== 'modelpack' && reg === registryOf($('base').value.trim());
  const isDest = reg === registryOf($('dest').value.trim());
  const who = `${isBase && isDest ? 'the registry' : isDest ? 'the destination\'s registry' : 'the base\'s registry'} ${reg}`;
  if (e.auth || e.status === 401) {
    const hint = !isDest
      ? 'This page sends credentials only to the destination\'s registry: the base must be readable without them, or be in the destination\'s registry.'
      : $('password').value
        ? 'Check the username and the password or token under "Credentials for the destination".'
        : 'Fill in the username and password (or a token alone) under "Credentials for the destination" and try again.';
    return `Authentication failed with ${who}: ${m}. ${hint}`;
  }
  if (e.status === 403) return `Access denied by ${who} (HTTP 403): ${m}`;
  if (e.status === 404) return `The image was not found in ${who} (HTTP 404): ${m}`;
  if (e.network) return `${who[0].toUpperCase()}${who.slice(1)} could not be reached from this page (network or CORS): ${m}`;
  return `${who[0].toUpperCase()}${who.slice(1)} failed: ${m}`;
}

$('form').addEventListener('submit', (e) => {
  e.preventDefault();
  run(true, async () => {
    const pack = layout() === 'modelpack';
    const refs = [['destination', $('dest').value.trim()]];
    if (!pack) refs.unshift(['base', $('base').value.trim()]);
    const o = await opts(refs);
    const card = o.modelcar ? $('card').files[0] || null : null;
    let total = picked.reduce((s, p) => s + p.file.size, 0) + (card ? card.size : 0);
    const t0 = performance.now();
    let doneBefore = 0, layerTotal = 0, confirmed = 0;
    const onProgress = (p) => {
      if (p.kind === 'log') log(p.message);
      if (p.kind === 'leftOut') {
        for (const n of p.files) { const r = rows.get(n); if (r) { r.left = true; total -= r.size; r.stat.textContent = 'left out (hidden or a cache)'; } }
      }
      if (p.kind === 'phase') $('phase').textContent = { base: 'Reading the base image…', mount: 'Linking the base layers…', facts: 'Reading the weights\' headers…', manifest: 'Writing the manifest…' }[p.phase] || p.phase;
      if (p.kind === 'layer') { layerTotal = p.total; $('phase').textContent = `Building and uploading: ${p.files}`; }
      if (p.kind === 'layerDone') { doneBefore += layerTotal; confirmed = 0; }
      // a ModelPack's files upload several at a time: one total over them all, and each file's
      // own bar, full once the destination has it (sent, or found there)
      if (p.kind === 'fileDone') {
        const r = rows.get(p.name);
        if (r) { r.bar.value = r.bar.max; r.stat.textContent = p.sent ? 'done' : 'done (in the destination already)'; }
      }
      // (the config's upload, last, has no files)
      if ((p.kind === 'read' || p.kind === 'upload') && p.total > 0) {
        if (p.kind === 'upload') confirmed = p.confirmed;
        fileProgress(p.files);
        const fileFrac = p.total ? Math.min(1, p.read / p.total) : 1;
        $('filebar').style.width = `${(fileFrac * 100).toFixed(1)}%`;
        $('filestat').textContent = `${pack ? 'The files' : 'This layer'}: ${human(p.read)} of ${human(p.total)} read and hashed; ${human(confirmed)} confirmed by the registry`;
        // (a ModelPack's total: what the registry has of its files, found ones counted whole;
        // several upload at once and each is read well ahead of its upload)
        const done = pack ? confirmed : doneBefore + Math.min(p.read, p.total);
        const secs = (performance.now() - t0) / 1000;
        const rate = done / Math.max(secs, 0.001);
        const eta = rate > 0 ? (total - done) / rate : 0;
        $('totalbar').style.width = `${total ? ((done / total) * 100).toFixed(1) : 100}%`;
        $('totalstat').textContent = `${human(done)} of ${human(total)} · ${human(rate)}/s · ETA ${eta.toFixed(0)} s`;
      }
    };
    const files = picked.map((p) => p.file), names = picked.map((p) => p.name);
    const out = pack
      ? await job({ type: 'pack', opts: o, files, names, roots: picked.map((p) => p.root ?? null) }, onProgress)
      : await job({ type: 'affix', opts: o, files, names, card }, onProgress);
    $('totalbar').style.width = '100%';
    $('filebar').style.width = '100%';
    for (const r of rows.values()) {
      if (r.left) continue;
      r.bar.value = r.bar.max;
      if (!r.stat.textContent.startsWith('done')) r.stat.textContent = 'done';
    }
    $('phase').textContent = `Done in ${((performance.now() - t0) / 1000).toFixed(1)} s`;
    $('result').textContent = out;
  });
});
