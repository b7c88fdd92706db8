// The page: collects inputs and files, hands the job to the worker, shows progress. Credentials
// live in this page's memory only and go to the worker with the job; nothing is stored.
const $ = (id) => document.getElementById(id);
const worker = new Worker('worker.js', { type: 'module' });
let picked = []; // [{file, name}]

const human = (n) => {
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${u[i]}`;
};
const log = (m) => { $('log').textContent += m + '\n'; };

// one row per file: its name and size, and (once the job runs) its own bar with bytes, rate, ETA
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
    const stat = document.createElement('span');
    stat.className = 'small';
    li.append(label, bar, stat);
    ul.appendChild(li);
    rows.set(p.name, { bar, stat, size: p.file.size, t0: 0 });
  }
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

// a dropped folder: walk its entries (files keep their relative paths)
async function walkEntry(entry, prefix, out) {
  if (entry.isFile) {
    const file = await new Promise((res, rej) => entry.file(res, rej));
    out.push({ file, name: prefix + entry.name });
  } else if (entry.isDirectory) {
    const reader = entry.createReader();
    for (;;) {
      const batch = await new Promise((res, rej) => reader.readEntries(res, rej));
      if (!batch.length) break;
      for (const e of batch) await walkEntry(e, prefix + entry.name + '/', out);
    }
  }
}

async function addDropped(dt) {
  const out = [];
  const entries = [...(dt.items || [])]
    .map((it) => (it.webkitGetAsEntry ? it.webkitGetAsEntry() : null))
    .filter(Boolean);
  if (entries.length) {
    for (const e of entries) await walkEntry(e, '', out);
  } else {
    for (const f of dt.files) out.push({ file: f, name: f.name });
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
    for (const f of e.target.files) picked.push({ file: f, name: f.webkitRelativePath || f.name });
    e.target.value = '';
    showFiles();
  });
}

function hostOf(ref) {
  const first = ref.replace(/^https?:\/\//, '').split('/')[0];
  return /[.:]|^localhost$/.test(first) ? first : null;
}

// Registries that send CORS headers are used directly; for the others the page goes through the
// same-origin proxy of the edge worker (/proxy/<url>).
async function route(ref) {
  const host = hostOf(ref);
  if (!host) return '';
  const local = /^(127\.|localhost)/.test(host);
  const scheme = ref.startsWith('http://') || local ? 'http' : 'https';
  try {
    await fetch(`${scheme}://${host}/v2/`, { method: 'GET', cache: 'no-store' });
    return '';
  } catch (_) {
    log(`${host} does not allow this page (no CORS): using the proxy`);
    return `${location.origin}/proxy`;
  }
}

async function opts() {
  const modelcar = document.querySelector('input[name=layout]:checked').value === 'modelcar';
  const pass = $('password').value;
  return {
    base: $('base').value.trim(),
    dest: $('dest').value.trim(),
    path: modelcar ? '/models' : $('path').value.trim() || '/src/weights',
    modelcar,
    compression: $('compression').value,
    username: $('username').value || null,
    password: $('username').value ? pass : null,
    token: !$('username').value && pass ? pass : null,
    proxy: await route($('dest').value.trim()),
    chunk_mib: 64,
    created: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
  };
}

function job(msg, onProgress) {
  return new Promise((resolve, reject) => {
    worker.onmessage = (ev) => {
      const m = ev.data;
      if (m.type === 'progress') onProgress(m.data);
      else if (m.type === 'error') reject(new Error(m.message));
      else resolve(m.result);
    };
    worker.postMessage(msg);
  });
}

$('show').addEventListener('click', async () => {
  try {
    const info = await job({ type: 'inspect', opts: await opts() }, () => {});
    const tb = document.querySelector('#baseinfo tbody');
    tb.innerHTML = '';
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
  } catch (e) {
    $('result').className = 'error';
    $('result').textContent = explain(e.message);
  }
});

function explain(m) {
  if (/401|unauthorized|authentication/i.test(m)) return `Authentication failed: ${m}`;
  if (/MANIFEST_UNKNOWN|NAME_UNKNOWN|manifest unknown/i.test(m)) return `The image was not found: ${m}`;
  if (/CORS|network error/i.test(m)) return `The registry could not be reached from this page (network or CORS): ${m}`;
  return m;
}

$('form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const o = await opts();
  const card = o.modelcar ? $('card').files[0] || null : null;
  const total = picked.reduce((s, p) => s + p.file.size, 0) + (card ? card.size : 0);
  $('progress').hidden = false;
  $('result').className = '';
  $('result').textContent = '';
  $('go').disabled = true;
  const t0 = performance.now();
  let doneBefore = 0, layerTotal = 0, confirmed = 0;
  const onProgress = (p) => {
    if (p.kind === 'log') log(p.message);
    if (p.kind === 'phase') $('phase').textContent = { base: 'Reading the base image…', mount: 'Linking the base layers…', manifest: 'Writing the manifest…' }[p.phase] || p.phase;
    if (p.kind === 'layer') { layerTotal = p.total; $('phase').textContent = `Building and uploading: ${p.files}`; }
    if (p.kind === 'layerDone') { doneBefore += layerTotal; confirmed = 0; }
    // (the config's upload, last, has no files)
    if ((p.kind === 'read' || p.kind === 'upload') && p.total > 0) {
      if (p.kind === 'upload') confirmed = p.confirmed;
      fileProgress(p.files);
      const fileFrac = p.total ? Math.min(1, p.read / p.total) : 1;
      $('filebar').style.width = `${(fileFrac * 100).toFixed(1)}%`;
      $('filestat').textContent = `This layer: ${human(p.read)} of ${human(p.total)} read and hashed; ${human(confirmed)} confirmed by the registry`;
      const done = doneBefore + Math.min(p.read, p.total);
      const secs = (performance.now() - t0) / 1000;
      const rate = done / Math.max(secs, 0.001);
      const eta = rate > 0 ? (total - done) / rate : 0;
      $('totalbar').style.width = `${total ? ((done / total) * 100).toFixed(1) : 100}%`;
      $('totalstat').textContent = `${human(done)} of ${human(total)} · ${human(rate)}/s · ETA ${eta.toFixed(0)} s`;
    }
  };
  try {
    const out = await job({ type: 'affix', opts: o, files: picked.map((p) => p.file), names: picked.map((p) => p.name), card }, onProgress);
    $('totalbar').style.width = '100%';
    $('filebar').style.width = '100%';
    for (const r of rows.values()) { r.bar.value = r.bar.max; r.stat.textContent = 'done'; }
    $('phase').textContent = `Done in ${((performance.now() - t0) / 1000).toFixed(1)} s`;
    $('result').textContent = out;
  } catch (err) {
    $('result').className = 'error';
    $('result').textContent = explain(err.message);
  } finally {
    $('go').disabled = false;
  }
});
