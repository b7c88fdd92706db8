// Helpers shared by the browser tests (Chromium and Firefox): the static server for web/dist,
// the page's and Node's identical pseudo-random files, and the checks made with skopeo and umoci.
import assert from 'node:assert/strict';
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import os from 'node:os';
import crypto from 'node:crypto';
import { execFileSync, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const here = path.dirname(fileURLToPath(import.meta.url));
export const root = path.resolve(here, '../..');
export const dist = path.join(root, 'web/dist');
export const REG = '127.0.0.1:5100';
export const artifacts = path.join(here, 'artifacts');

// the same pseudo-random bytes in Node and in the page: xorshift32 per 4-byte word, seeded per MiB
export const GEN = `(mib, seed) => {
  const out = new Uint8Array(mib * 1048576);
  const w = new Uint32Array(out.buffer);
  for (let b = 0; b < mib; b++) {
    let x = (seed * 2654435761 + b * 40503 + 1) >>> 0 || 1;
    for (let i = b * 262144, e = i + 262144; i < e; i++) {
      x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
      w[i] = x;
    }
  }
  return out;
}`;
export const gen = eval(GEN);

/// Serves web/dist on 127.0.0.1; resolves to { server, url }.
export function serve() {
  assert.ok(fs.existsSync(path.join(dist, 'pkg/lamina_web_bg.wasm')), 'web/dist is built (web/build.sh)');
  fs.mkdirSync(artifacts, { recursive: true });
  const types = { '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css', '.wasm': 'application/wasm' };
  const server = http.createServer((req, res) => {
    const p = path.join(dist, decodeURIComponent(new URL(req.url, 'http://x').pathname));
    const file = p.endsWith('/') ? path.join(p, 'index.html') : p;
    if (!file.startsWith(dist) || !fs.existsSync(file)) { res.writeHead(404); res.end(); return; }
    res.writeHead(200, { 'content-type': types[path.extname(file)] || 'application/octet-stream' });
    fs.createReadStream(file).pipe(res);
  });
  return new Promise((r) => server.listen(0, '127.0.0.1', () => r({ server, url: `http://127.0.0.1:${server.address().port}/` })));
}

export function sh(cmd, args) {
  return execFileSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 << 20 });
}

export function sha256(buf) {
  return crypto.createHash('sha256').update(buf).digest('hex');
}

/// Checks a pushed image of `dest` (`result` the page's `repo@sha256:...`) against the base with
/// skopeo, unpacks it with umoci, and gives the unpacked rootfs to `check` before cleaning up.
export function checkPushed(dest, result, baseRef, check, creds = null) {
  const auth = creds ? ['--creds', creds] : [];
  const raw = sh('skopeo', ['inspect', '--raw', '--tls-verify=false', ...auth, `docker://${dest}`]);
  assert.equal(`${dest.replace(/:[^:/]+$/, '')}@sha256:${sha256(raw)}`, result, 'the pushed digest is the tag\'s');
  const m = JSON.parse(raw);
  const b = JSON.parse(sh('skopeo', ['inspect', '--raw', '--tls-verify=false', ...auth, `docker://${baseRef}`]));
  assert.deepEqual(m.layers.slice(0, b.layers.length), b.layers, 'the base layers are unchanged');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lamina-web-'));
  try {
    sh('skopeo', ['copy', '-q', '--src-tls-verify=false', ...(creds ? ['--src-creds', creds] : []), `docker://${dest}`, `oci:${dir}/layout:img`]);
    sh('umoci', ['unpack', '--rootless', '--image', `${dir}/layout:img`, `${dir}/bundle`]);
    check(m, b, path.join(dir, 'bundle/rootfs'));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/// Debian's chromium, headless, with a fresh profile (playwright-core; no browser download).
export function launchChromium() {
  return chromium.launchPersistentContext(fs.mkdtempSync(path.join(os.tmpdir(), 'lamina-chromium-')), {
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

/// Drops files made in the page ([name, MiB, seed] or [name, 0, 0, text]) onto the drop zone.
export async function dropGenerated(page, files) {
  const dt = await page.evaluateHandle(([specs, src]) => {
    const g = eval(src);
    const dt = new DataTransfer();
    for (const [name, mib, seed, text] of specs) {
      const body = text !== undefined ? [text] : [g(mib, seed)];
      dt.items.add(new File(body, name));
    }
    return dt;
  }, [files, GEN]);
  await page.dispatchEvent('#drop', 'drop', { dataTransfer: dt });
}

/// Waits until the page shows a digest or an error; gives the result line and the log.
export async function waitResult(page) {
  await page.waitForFunction(() => /@sha256:|error/i.test(document.querySelector('#result').textContent + document.querySelector('#result').className), null, { timeout: 300000 });
  return { result: await page.textContent('#result'), log: await page.textContent('#log') };
}

/// Runs the edge Worker (edge/build) in workerd with `wrangler dev --local` on 127.0.0.1:`port`,
/// with `vars` (name -> value) overriding wrangler.toml's; resolves to the child once it is
/// ready. `stop(child)` ends it.
export async function startWrangler(port, vars) {
  assert.ok(fs.existsSync(path.join(root, 'edge/build/index_bg.wasm')), 'the Worker is built (edge/build.sh)');
  const args = ['wrangler', 'dev', '--local', '--ip', '127.0.0.1', '--port', `${port}`,
    '--show-interactive-dev-session=false',
    // a fresh state directory: Durable Objects of earlier runs are gone
    '--persist-to', fs.mkdtempSync(path.join(os.tmpdir(), 'lamina-wrangler-'))];
  for (const [k, v] of Object.entries(vars)) args.push('--var', `${k}:${v}`);
  const dev = spawn('npx', args, {
    cwd: path.join(root, 'edge'), env: { ...process.env, WRANGLER_SEND_METRICS: 'false' },
    detached: true, stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  await new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`wrangler dev did not start:\n${out}`)), 90000);
    const on = (d) => { out += d; if (/Ready on/.test(out)) { clearTimeout(t); resolve(); } };
    dev.stdout.on('data', on);
    dev.stderr.on('data', on);
    dev.on('exit', (c) => reject(new Error(`wrangler dev exited (${c}):\n${out}`)));
  });
  dev.output = () => out;
  return dev;
}

/// Ends a `startWrangler` child; with LAMINA_WRANGLER_LOG=FILE its output is appended there.
export function stop(dev) {
  if (dev && process.env.LAMINA_WRANGLER_LOG) {
    fs.appendFileSync(process.env.LAMINA_WRANGLER_LOG, dev.output());
  }
  if (dev) { try { process.kill(-dev.pid); } catch (_) { /* gone */ } }
}

/// The lamina CLI the ModelPack tests compare the page with: LAMINA_BIN, else the debug build
/// (`cargo build -p lamina-cli`; tests/run.sh's `cargo test --workspace` builds it first).
export const LAMINA = process.env.LAMINA_BIN ||
  path.join(process.env.CARGO_TARGET_DIR || path.join(root, 'target'), 'debug/lamina');

/// Runs the CLI with `env` added; gives its stdout.
export function lamina(args, env = {}) {
  assert.ok(fs.existsSync(LAMINA), `${LAMINA} is built (cargo build -p lamina-cli, or set LAMINA_BIN)`);
  return execFileSync(LAMINA, args, { encoding: 'utf8', maxBuffer: 64 << 20, env: { ...process.env, ...env } });
}

/// A safetensors file: the header (`tensors`, padded with `pad` spaces, as the format allows)
/// and `data` after it.
function safetensors(tensors, data, pad = 0) {
  const json = Buffer.concat([Buffer.from(JSON.stringify(tensors)), Buffer.alloc(pad, 0x20)]);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  return Buffer.concat([len, json, Buffer.from(data)]);
}

/// A small model folder `parent/tiny` shaped like a Hugging Face one: a safetensors file whose
/// header is longer than the first read of it (256 KiB), a nested one, transformers'
/// config.json, a tokenizer, a README, an empty file, a file no list names, and a hidden file
/// and a Python cache that a ModelPack leaves out. Gives the folder, the files packed
/// ({path: bytes}), each one's kind as `lamina layers` says it, and the model's facts.
export function modelFolder(parent) {
  const dir = path.join(parent, 'tiny');
  const files = {
    'model.safetensors': safetensors(
      { __metadata__: { format: 'pt' }, 'model.w': { dtype: 'BF16', shape: [512, 1024], data_offsets: [0, 1 << 20] } },
      gen(1, 41), 300000),
    'unet/x.safetensors': safetensors({ a: { dtype: 'F16', shape: [10], data_offsets: [0, 20] } }, gen(1, 42).subarray(0, 20)),
    'config.json': Buffer.from('{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "transformers_version": "4.46.0"}\n'),
    'tokenizer.json': Buffer.from('{"version": "1.0", "model": {"type": "BPE"}}\n'),
    'README.md': Buffer.from('# tiny\nA model made for a test.\n'),
    'empty.txt': Buffer.alloc(0),
    'blob.qq': Buffer.from('what kind?\n'),
  };
  const left = { '.gitattributes': '*.safetensors filter=lfs\n', '__pycache__/m.cpython-311.pyc': 'cache' };
  for (const [p, b] of [...Object.entries(files), ...Object.entries(left)]) {
    fs.mkdirSync(path.dirname(path.join(dir, p)), { recursive: true });
    fs.writeFileSync(path.join(dir, p), b);
  }
  const kinds = {
    'README.md': 'doc', 'blob.qq': 'code', 'config.json': 'config', 'empty.txt': 'doc',
    'model.safetensors': 'weight', 'tokenizer.json': 'config', 'unet/x.safetensors': 'weight',
  };
  const model = {
    name: 'tiny', family: 'llama', format: 'safetensors',
    // 512 x 1024 + 10 parameters; by parameters, bfloat16 first
    paramSize: '524K', precision: 'bfloat16,float16', architecture: 'transformer', quantization: null,
  };
  return { dir, files, kinds, model, leftOut: Object.keys(left) };
}

/// Checks the ModelPack the page pushed to `dest` (`result` its `repo@sha256:...`) from the
/// folder `m` (see modelFolder) with the files' time `epoch`: the tag's digest is the page's,
/// `lamina pack` makes the same manifest digest of the same folder with SOURCE_DATE_EPOCH=epoch
/// (and another one with another time: the time is in it), `lamina layers --json` lists the
/// paths, kinds and facts, and `lamina extract` gives the files back byte for byte.
export function checkModelPack(dest, result, m, epoch) {
  const raw = sh('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${dest}`]);
  const digest = `sha256:${sha256(raw)}`;
  assert.equal(`${dest.replace(/:[^:/]+$/, '')}@${digest}`, result, 'the pushed digest is the tag\'s');
  const manifest = JSON.parse(raw);
  assert.equal(manifest.artifactType, 'application/vnd.cncf.model.manifest.v1+json');
  assert.equal(manifest.config.mediaType, 'application/vnd.cncf.model.config.v1+json');
  // each layer is the file itself: its digest is the file's SHA-256
  for (const l of manifest.layers) {
    const p = l.annotations['org.cncf.model.filepath'];
    assert.ok(p in m.files, `${p} is one of the files`);
    assert.equal(l.digest, `sha256:${sha256(m.files[p])}`, p);
    assert.equal(l.size, m.files[p].length, p);
    assert.match(l.mediaType, /^application\/vnd\.cncf\.model\.[a-z.]+\.v1\.raw$/, p);
  }
  // the CLI on the same folder, into another repository: the same manifest, digest for digest
  const cliRepo = `${dest.replace(/:[^:/]+$/, '')}-cli`;
  const cli = lamina(['pack', m.dir, '--dest', `${cliRepo}:v1`, '--format', 'modelpack', '-q'],
    { SOURCE_DATE_EPOCH: `${epoch}` }).trim();
  assert.equal(cli, `${cliRepo}@${digest}`, 'lamina pack makes the artifact the page made');
  const later = lamina(['pack', m.dir, '--dest', `${cliRepo}:later`, '-q'], { SOURCE_DATE_EPOCH: `${epoch + 1}` }).trim();
  assert.notEqual(later.split('@')[1], digest, 'another SOURCE_DATE_EPOCH is another artifact');
  // what lamina reads of the page's artifact
  const info = JSON.parse(lamina(['layers', '--json', dest]));
  const img = info.images[0];
  assert.equal(img.format, 'modelpack');
  assert.deepEqual(img.layers.map((l) => [l.path, l.kind, l.packing]),
    Object.keys(m.kinds).sort().map((p) => [p, m.kinds[p], 'raw']), 'the files in path order, each a raw layer of its kind');
  const guessed = img.layers.filter((l) => l.annotations['org.cncf.model.file.mediatype.untested'] === 'true').map((l) => l.path);
  assert.deepEqual(guessed, ['blob.qq'], 'only the file no list names is marked untested');
  const meta = JSON.parse(img.layers.find((l) => l.path === 'unet/x.safetensors').annotations['org.cncf.model.file.metadata+json']);
  assert.deepEqual(meta, { name: 'x.safetensors', mode: 0o644, uid: 0, gid: 0, size: m.files['unet/x.safetensors'].length, mtime: new Date(epoch * 1000).toISOString().replace(/\.000Z$/, 'Z'), typeflag: 0 });
  assert.deepEqual(img.model, m.model);
  // and the files back, byte for byte, nothing else
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'lamina-web-extract-'));
  try {
    lamina(['extract', '-q', dest, '-o', `${out}/`]);
    const got = sh('find', [out, '-type', 'f', '-printf', '%P\n']).trim().split('\n').sort();
    assert.deepEqual(got, Object.keys(m.files).sort());
    for (const [p, b] of Object.entries(m.files)) assert.equal(sha256(fs.readFileSync(path.join(out, p))), sha256(b), p);
  } finally {
    fs.rmSync(out, { recursive: true, force: true });
  }
}

/// Drops the folder `dir` on the page's drop zone as a browser hands a dragged folder over: a
/// drop event whose items give FileSystemEntry objects (a directory entry with a reader, file
/// entries giving Files, each answered later as the browser does). A synthetic drag cannot
/// carry a real folder, and Firefox's WebDriver cannot give one to the folder input; this walks
/// the same code of the page a user's drop does. Works with playwright's and puppeteer's pages.
export async function dropFolder(page, dir) {
  const tree = (p) => fs.statSync(p).isDirectory()
    ? { name: path.basename(p), kids: fs.readdirSync(p).sort().map((k) => tree(path.join(p, k))) }
    : { name: path.basename(p), data: fs.readFileSync(p).toString('base64') };
  await page.evaluate((t) => {
    const bytes = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
    const later = (f) => setTimeout(f, 0);
    const entry = (n) => n.kids
      ? {
        isFile: false, isDirectory: true, name: n.name,
        createReader() {
          // the entries in two batches, then none: readers are called until they give none
          const half = Math.ceil(n.kids.length / 2);
          const batches = [n.kids.slice(0, half), n.kids.slice(half), []];
          return { readEntries(ok) { const b = batches.shift() || []; later(() => ok(b.map(entry))); } };
        },
      }
      : { isFile: true, isDirectory: false, name: n.name, file(ok) { later(() => ok(new File([bytes(n.data)], n.name))); } };
    const ev = new Event('drop', { bubbles: true, cancelable: true });
    Object.defineProperty(ev, 'dataTransfer', { value: { items: [{ webkitGetAsEntry: () => entry(t) }], files: [] } });
    document.getElementById('drop').dispatchEvent(ev);
  }, tree(dir));
}

/// A WAN-like link in front of the plain registry (REG), as tests/examples/throttle-proxy.rs
/// is for the CLI's benchmark: every blob upload's body (PATCH and PUT under /blobs/uploads/)
/// is read at `rate` bytes a second, each request on its own (one TCP stream over a long path);
/// everything else passes as it is. Resolves to { host, log, aborted, inflight, close, refuse }: `log`
/// holds, per request that carried a body there, { method, path, bytes, start, end } (ms,
/// Date.now()), `end` when its body was all read; `aborted` those whose sender gave up
/// mid-body (`aborted`: when, as the proxy sees it: after the bytes the sockets held);
/// `inflight` counts the bodies being read; setting `refuse` to a number n makes the n-th
/// PATCH from then on (1: the next) answer 403 DENIED, as a registry refusing a push would.
export function startThrottle(rate) {
  const log = [];
  const [uphost, upport] = REG.split(':');
  const t = { refuse: 0, inflight: 0 };
  const ups = new Set();
  const aborted = [];
  const server = http.createServer((req, res) => {
    if (req.method === 'PATCH' && t.refuse > 0 && --t.refuse === 0) {
      req.resume();
      req.on('end', () => {
        res.writeHead(403, { 'content-type': 'application/json', 'access-control-allow-origin': '*' });
        res.end(JSON.stringify({ errors: [{ code: 'DENIED', message: 'requested access to the resource is denied' }] }));
      });
      return;
    }
    const up = http.request({ host: uphost, port: +upport, method: req.method, path: req.url, headers: req.headers }, (r) => {
      res.writeHead(r.statusCode, r.headers);
      r.pipe(res);
    });
    ups.add(up);
    up.on('close', () => ups.delete(up));
    up.on('error', () => { if (!res.headersSent) res.writeHead(502); res.end(); });
    // a request the browser dropped (a job that failed, a page closed) goes no further
    req.on('close', () => { if (!req.complete) up.destroy(); });
    const slow = (req.method === 'PATCH' || req.method === 'PUT') && req.url.includes('/blobs/uploads/');
    if (!slow) { req.pipe(up); return; }
    const rec = { method: req.method, path: req.url.replace(/\?.*/, ''), bytes: 0, start: Date.now(), end: null };
    t.inflight++;
    req.on('close', () => t.inflight--);
    // the body goes on when the registry took what it got and the rate allows more
    let holds = 0;
    const hold = () => { holds++; req.pause(); };
    const release = () => { if (--holds === 0) req.resume(); };
    req.on('data', (b) => {
      rec.bytes += b.length;
      if (!up.write(b)) { hold(); up.once('drain', release); }
      const wait = rec.start + (rec.bytes / rate) * 1000 - Date.now();
      if (wait > 0) { hold(); setTimeout(release, wait); }
    });
    req.on('end', () => { rec.end = Date.now(); if (rec.bytes) log.push(rec); up.end(); });
    req.on('close', () => { if (!req.complete) { rec.aborted = Date.now(); aborted.push(rec); } });
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(Object.assign(t, {
    host: `127.0.0.1:${server.address().port}`, log, aborted,
    close: () => { for (const u of ups) u.destroy(); server.closeAllConnections(); server.close(); },
  }))));
}

/// Of the throttled bodies in `log` (see startThrottle) from `since` on: the most that were
/// being read at once, the sum of their durations (what one at a time would take at least) and
/// the span from the first start to the last end (ms).
export function overlap(log, since = 0) {
  const rs = log.filter((r) => r.start >= since);
  const edges = rs.flatMap((r) => [[r.start, 1], [r.end, -1]]).sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  let at = 0, most = 0;
  for (const [, d] of edges) { at += d; most = Math.max(most, at); }
  const sum = rs.reduce((s, r) => s + (r.end - r.start), 0);
  const span = rs.length ? Math.max(...rs.map((r) => r.end)) - Math.min(...rs.map((r) => r.start)) : 0;
  return { most, sum, span, count: rs.length };
}

/// Writes the folder `parent/name` of `files` ({path: [MiB, seed] of gen's bytes, or a
/// string}); gives its path and the files' bytes ({path: Buffer}).
export function writeGenerated(parent, name, files) {
  const dir = path.join(parent, name);
  const bytes = {};
  for (const [p, spec] of Object.entries(files)) {
    bytes[p] = typeof spec === 'string' ? Buffer.from(spec) : Buffer.from(gen(spec[0], spec[1]));
    fs.mkdirSync(path.dirname(path.join(dir, p)), { recursive: true });
    fs.writeFileSync(path.join(dir, p), bytes[p]);
  }
  return { dir, bytes };
}

/// Drops the folder `name` of `files` (as writeGenerated takes them) on the page as dropFolder
/// does, the files' bytes made in the page (large files need not cross the driver's wire).
export async function dropGeneratedFolder(page, name, files) {
  await page.evaluate(([name, files, src]) => {
    const g = eval(src);
    const later = (f) => setTimeout(f, 0);
    const root = { name, kids: new Map() };
    for (const [p, spec] of Object.entries(files)) {
      const parts = p.split('/');
      let d = root;
      for (const part of parts.slice(0, -1)) {
        if (!d.kids.has(part)) d.kids.set(part, { name: part, kids: new Map() });
        d = d.kids.get(part);
      }
      d.kids.set(parts.at(-1), { name: parts.at(-1), spec });
    }
    const entry = (n) => n.kids
      ? {
        isFile: false, isDirectory: true, name: n.name,
        createReader() {
          const batches = [[...n.kids.values()], []];
          return { readEntries(ok) { const b = batches.shift() || []; later(() => ok(b.map(entry))); } };
        },
      }
      : {
        isFile: true, isDirectory: false, name: n.name,
        file(ok) { later(() => ok(new File([typeof n.spec === 'string' ? n.spec : g(n.spec[0], n.spec[1])], n.name))); },
      };
    const ev = new Event('drop', { bubbles: true, cancelable: true });
    Object.defineProperty(ev, 'dataTransfer', { value: { items: [{ webkitGetAsEntry: () => entry(root) }], files: [] } });
    document.getElementById('drop').dispatchEvent(ev);
  }, [name, files, GEN]);
}

/// A model folder for the slow-link tests: four weights of 6 MiB, a copy of the first in a
/// sub-folder (the same blob, uploaded twice at once: the second upload ends with the registry
/// holding the blob already), a tokenizer of 2 MiB and a README (small: hashed first, asked
/// for, sent in one PUT). More files than uploads at once, so that the bound shows.
export const SLOW_MODEL = {
  'README.md': '# slow\nA model sent over a slow link.\n',
  'copy/model-00001-of-00004.bin': [6, 71],
  'model-00001-of-00004.bin': [6, 71],
  'model-00002-of-00004.bin': [6, 72],
  'model-00003-of-00004.bin': [6, 73],
  'model-00004-of-00004.bin': [6, 74],
  'tokenizer.json': [2, 75],
};

/// Checks the ModelPack the page pushed as `result` (`repo@sha256:...`, through a proxy or
/// not) and tagged at `ref` (read from the registry directly) from the folder `dir` of `bytes`
/// ({path: Buffer}) with the files' time `epoch`: the tag's digest is the page's, the layers
/// are the files in path order (whatever order their uploads ended in), each blob the file,
/// and `lamina pack` makes the same manifest digest of the same folder.
export function checkPackOf(ref, result, dir, bytes, epoch) {
  const raw = sh('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${ref}`]);
  const digest = `sha256:${sha256(raw)}`;
  assert.equal(result.split('@')[1], digest, 'the tag is the page\'s digest');
  const m = JSON.parse(raw);
  assert.deepEqual(m.layers.map((l) => l.annotations['org.cncf.model.filepath']), Object.keys(bytes).sort(), 'path order');
  for (const l of m.layers) {
    const p = l.annotations['org.cncf.model.filepath'];
    assert.equal(l.digest, `sha256:${sha256(bytes[p])}`, p);
    assert.equal(l.size, bytes[p].length, p);
  }
  const cliRepo = `${ref.replace(/:[^:/]+$/, '')}-cli`;
  const cli = lamina(['pack', dir, '--dest', `${cliRepo}:v1`, '--format', 'modelpack', '-q'],
    { SOURCE_DATE_EPOCH: `${epoch}` }).trim();
  assert.equal(cli, `${cliRepo}@${digest}`, 'lamina pack makes the artifact the page made');
  return m;
}
