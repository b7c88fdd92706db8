// The edge Worker's signed hooks in the real runtime (workerd via `wrangler dev --local`), against
// the local registries: plain (:5100), Basic (:5101) and token auth (:5103, token server :5104),
// with credentials only from the Worker's REGISTRY_AUTH. Layers come from a local file server;
// two fronts of the plain registry (other registries to the Worker) lose upload sessions and
// count downloads.
// Results are checked with skopeo, umoci, zstd and tar; the model hooks (pack, convert) against
// the native CLI's results for the same input (LAMINA_BIN, or the debug build made here).
//   (edge/build.sh; registries and fixtures running) then cd tests/web && npm test
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import crypto from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { sh, sha256, gen, checkPushed, startWrangler, stop, root } from './common.mjs';

const PORT = 8798;
const EDGE = `http://127.0.0.1:${PORT}`;
const SECRET = 'hook-secret-for-tests-0123456789';
const PLAIN = '127.0.0.1:5100';
const BASIC = '127.0.0.1:5101';
const TOKEN = '127.0.0.1:5103';
const CREDS = 'testuser:testpass';
const BASE = `${PLAIN}/fixtures/base:latest`;
const run = `${process.pid}`;
let dev, files, filesUrl, lossy, counting;
const served = fs.mkdtempSync(path.join(os.tmpdir(), 'lamina-hook-src-'));
/// Requests the file server answered, per path (`/f/model.bin`).
const hits = new Map();

/// A file server: `/f/PATH` with Content-Length, `/chunked/PATH` without it, `/short/PATH`
/// announcing more bytes than it sends.
function startFiles() {
  files = http.createServer((req, res) => {
    const [, mode, ...rest] = new URL(req.url, 'http://x').pathname.split('/');
    const name = rest.join('/');
    const p = path.join(served, name);
    if (!name || !p.startsWith(`${served}/`) || !fs.existsSync(p) || !fs.statSync(p).isFile()) {
      res.writeHead(404); res.end(); return;
    }
    const size = fs.statSync(p).size;
    hits.set(`/${mode}/${name}`, (hits.get(`/${mode}/${name}`) ?? 0) + 1);
    if (mode === 'f') {
      res.writeHead(200, { 'content-length': size });
      fs.createReadStream(p).pipe(res);
    } else if (mode === 'chunked') {
      res.writeHead(200);
      fs.createReadStream(p).pipe(res);
    } else if (mode === 'short') {
      res.writeHead(200, { 'content-length': size + 1000 });
      res.write(fs.readFileSync(p));
      res.destroy();
    } else { res.writeHead(404); res.end(); }
  });
  return new Promise((r) => files.listen(0, '127.0.0.1', () => { filesUrl = `http://127.0.0.1:${files.address().port}`; r(); }));
}

/// A front end for the plain registry, as the Worker sees another registry (127.0.0.1:PORT):
/// it forwards every request as it is (Host kept, so the registry's Locations point back at it)
/// and logs it. `lose(n)` arms it to lose the next `n` upload sessions that get a second PATCH,
/// as distribution does after a restart: that PATCH and every later request of the session
/// answer 404 BLOB_UPLOAD_UNKNOWN (the registry had confirmed the first chunk's bytes, which the
/// Worker no longer holds).
function startFront() {
  const front = { log: [], lost: new Set(), armed: 0, patches: new Map() };
  front.lose = (n) => { front.armed = n; front.lost.clear(); };
  front.srv = http.createServer((req, res) => {
    const session = new URL(req.url, 'http://x').pathname.match(/\/blobs\/uploads\/([^/]+)$/)?.[1];
    const entry = { method: req.method, path: req.url, status: 0 };
    front.log.push(entry);
    if (session && req.method === 'PATCH') {
      const n = (front.patches.get(session) ?? 0) + 1;
      front.patches.set(session, n);
      if (n === 2 && front.armed > 0) { front.armed -= 1; front.lost.add(session); }
    }
    if (session && front.lost.has(session)) {
      req.resume();
      req.on('end', () => {
        entry.status = 404;
        res.writeHead(404, { 'content-type': 'application/json', 'docker-distribution-api-version': 'registry/2.0' });
        res.end(JSON.stringify({ errors: [{ code: 'BLOB_UPLOAD_UNKNOWN', message: 'blob upload unknown to registry' }] }));
      });
      return;
    }
    const up = http.request({ host: '127.0.0.1', port: 5100, method: req.method, path: req.url, headers: req.headers }, (ur) => {
      entry.status = ur.statusCode;
      res.writeHead(ur.statusCode, ur.headers);
      ur.pipe(res);
    });
    up.on('error', () => res.destroy());
    // a client that stops reading (a download cancelled to be made again) ends the exchange
    // upstream too, or its socket would stay open with the rest of the body
    res.on('close', () => up.destroy());
    req.pipe(up);
  });
  return new Promise((r) => front.srv.listen(0, '127.0.0.1', () => { front.host = `127.0.0.1:${front.srv.address().port}`; r(front); }));
}

function signed(body, { secret = SECRET, ts = Math.floor(Date.now() / 1000) } = {}) {
  const sig = crypto.createHmac('sha256', secret).update(`${ts}.${body}`).digest('hex');
  return { 'x-lamina-signature': `sha256=${sig}`, 'x-lamina-timestamp': `${ts}` };
}

async function hook(kind, job, { headers, query = '' } = {}) {
  const body = typeof job === 'string' ? job : JSON.stringify(job);
  const r = await fetch(`${EDGE}/hooks/${kind}${query}`, {
    method: 'POST', body, headers: { 'content-type': 'application/json', ...(headers ?? signed(body)) },
  });
  const text = await r.text();
  try {
    return { status: r.status, json: JSON.parse(text), headers: r.headers };
  } catch (_) {
    assert.fail(`/hooks/${kind} answered ${r.status}, not JSON: ${text.slice(0, 2000)}`);
  }
}

/// A hook's answer once its job has ended: a job that outlasts the hook's wait (202; seen
/// once in a full run under load) is followed on /jobs/ID to its end (the 202 path has its own
/// test), and answers as the hook would have (200 done, 422 failed).
async function ended(r) {
  if (r.status !== 202) return r;
  for (let i = 0; i < 480; i++) {
    const st = await (await fetch(`${EDGE}/jobs/${r.json.id}`)).json();
    if (st.status === 'done') return { status: 200, json: st, headers: r.headers };
    if (st.status === 'failed') return { status: 422, json: st, headers: r.headers };
    await new Promise((ok) => setTimeout(ok, 250));
  }
  assert.fail(`job ${r.json.id} did not end within 120 s`);
}

/// The digest a tag points at, or null when there is no such tag.
function tagDigest(ref, creds = null) {
  try {
    const raw = sh('skopeo', ['inspect', '--raw', '--tls-verify=false', ...(creds ? ['--creds', creds] : []), `docker://${ref}`]);
    return `sha256:${sha256(raw)}`;
  } catch (_) {
    return null;
  }
}

before(async () => {
  fs.writeFileSync(path.join(served, 'model.bin'), gen(24, 3));
  fs.writeFileSync(path.join(served, 'tok.json'), '{"vocab": 32000}\n');
  // a gzipped tar, passed through as it is
  fs.mkdirSync(path.join(served, 'tree/src/weights'), { recursive: true });
  fs.writeFileSync(path.join(served, 'tree/src/weights/adapter.bin'), gen(5, 4));
  sh('tar', ['-C', path.join(served, 'tree'), '-czf', path.join(served, 'adapter.tar.gz'), 'src']);
  await startFiles();
  // two other registries to the Worker, both the plain one behind: one that loses upload
  // sessions, one that counts downloads
  lossy = await startFront();
  counting = await startFront();
  dev = await startWrangler(PORT, {
    ALLOWED_REGISTRIES: [PLAIN, BASIC, TOKEN, '127.0.0.1:5104', lossy.host, counting.host].join(','),
    HOOK_SECRET: SECRET,
    REGISTRY_AUTH: JSON.stringify({ [BASIC]: { username: 'testuser', password: 'testpass' }, [TOKEN]: { username: 'testuser', password: 'testpass' } }),
    CHUNK_MIB: '8',
  });
});

after(() => {
  stop(dev);
  files?.close();
  for (const f of [lossy, counting]) { f?.srv.close(); f?.srv.closeAllConnections(); }
  fs.rmSync(served, { recursive: true, force: true });
});

test('a signed affix builds a layer from fetched and inline files and pushes it to the token-auth registry', async () => {
  const dest = `${TOKEN}/hooks/affix-${run}:files`;
  const r = await hook('affix', {
    base: BASE, dest,
    files: [{ name: 'model.bin', url: `${filesUrl}/f/model.bin` },
      { name: 'tokenizer/tok.json', url: `${filesUrl}/f/tok.json` },
      { name: 'README.md', data: Buffer.from('# a model\n').toString('base64') }],
  });
  assert.equal(r.status, 200, JSON.stringify(r.json));
  assert.equal(r.json.status, 'done');
  assert.match(r.json.image, new RegExp(`^${TOKEN}/hooks/affix-${run}@sha256:[0-9a-f]{64}$`));
  checkPushed(dest, r.json.image, `${TOKEN}/fixtures/base:latest`, (m, b, rootfs) => {
    assert.equal(m.layers.length, b.layers.length + 1);
    assert.equal(m.layers.at(-1).mediaType, 'application/vnd.oci.image.layer.v1.tar');
    assert.equal(sha256(fs.readFileSync(path.join(rootfs, 'src/weights/model.bin'))), sha256(gen(24, 3)));
    assert.equal(fs.readFileSync(path.join(rootfs, 'src/weights/tokenizer/tok.json'), 'utf8'), '{"vocab": 32000}\n');
    assert.equal(fs.readFileSync(path.join(rootfs, 'src/weights/README.md'), 'utf8'), '# a model\n');
  }, CREDS);
  // 24 MiB in 8 MiB chunks: the blob went up in PATCHes through the token registry
  const log = fs.readFileSync('/tmp/lamina-test/run/token.log', 'utf8').split('\n')
    .filter((l) => l.includes(`PATCH /v2/hooks/affix-${run}/blobs/uploads/`));
  assert.ok(log.length >= 3, `${log.length} PATCHes`);
  const cfg = JSON.parse(sh('skopeo', ['inspect', '--config', '--tls-verify=false', '--creds', CREDS, `docker://${dest}`]));
  assert.match(cfg.history.at(-1).created_by, /^COPY model\.bin tokenizer\/tok\.json README\.md \/src\/weights # weights$/);
});

test('a signed affix passes a gzipped tar through, and remix and zstd hooks edit across registries', async () => {
  const weights = `${PLAIN}/hooks/tar-${run}:gz`;
  let r = await hook('affix', { base: BASE, dest: weights, tar: { url: `${filesUrl}/f/adapter.tar.gz` } });
  assert.equal(r.status, 200, JSON.stringify(r.json));
  const tgz = fs.readFileSync(path.join(served, 'adapter.tar.gz'));
  checkPushed(weights, r.json.image, BASE, (m, b, rootfs) => {
    assert.equal(m.layers.at(-1).digest, `sha256:${sha256(tgz)}`, 'the tar.gz is the layer, unchanged');
    assert.equal(m.layers.at(-1).mediaType, 'application/vnd.oci.image.layer.v1.tar+gzip');
    assert.equal(sha256(fs.readFileSync(path.join(rootfs, 'src/weights/adapter.bin'))), sha256(gen(5, 4)));
  });

  // remix: the weights layer on the base, into the Basic-auth registry (base blobs streamed over)
  const remixed = `${BASIC}/hooks/remix-${run}:1`;
  r = await hook('remix', { base: BASE, weights, dest: remixed });
  assert.equal(r.status, 200, JSON.stringify(r.json));
  const w = JSON.parse(sh('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${weights}`]));
  checkPushed(remixed, r.json.image, `${BASIC}/fixtures/base:latest`, (m, b, rootfs) => {
    assert.deepEqual(m.layers.at(-1), w.layers.at(-1), 'the weights layer itself');
    assert.ok(fs.existsSync(path.join(rootfs, 'src/weights/adapter.bin')));
  }, CREDS);

  // an uncompressed text layer on top, which zstd does shrink
  const texty = `${BASIC}/hooks/remix-${run}:text`;
  const text = Buffer.from('the same line of text, again and again\n'.repeat(1500));
  r = await hook('affix', {
    base: remixed, dest: texty, compression: 'none',
    files: [{ name: 'notes.txt', data: text.toString('base64') }],
  });
  assert.equal(r.status, 200, JSON.stringify(r.json));
  const src = JSON.parse(sh('skopeo', ['inspect', '--raw', '--tls-verify=false', '--creds', CREDS, `docker://${texty}`]));

  // zstd: the text layer recompressed; the gzip layers zstd does not make smaller (ruzstd's
  // fastest level) kept as they were; the incompressible one stored uncompressed; each layer
  // decompresses to its diff_id
  const z = `${BASIC}/hooks/remix-${run}:zst`;
  r = await hook('zstd', { image: texty, dest: z });
  assert.equal(r.status, 200, JSON.stringify(r.json));
  const raw = sh('skopeo', ['inspect', '--raw', '--tls-verify=false', '--creds', CREDS, `docker://${z}`]);
  const m = JSON.parse(raw);
  assert.equal(`${BASIC}/hooks/remix-${run}@sha256:${sha256(raw)}`, r.json.image);
  assert.equal(m.mediaType, 'application/vnd.oci.image.manifest.v1+json');
  const cfg = JSON.parse(sh('skopeo', ['inspect', '--config', '--tls-verify=false', '--creds', CREDS, `docker://${z}`]));
  assert.ok(m.layers.at(-1).mediaType.endsWith('+zstd'), JSON.stringify(m.layers));
  assert.ok(m.layers.at(-1).size < text.length / 10, JSON.stringify(m.layers));
  m.layers.forEach((l, i) => {
    if (/gzip$/.test(l.mediaType)) {
      assert.deepEqual(l, src.layers[i], `gzip layer ${i} kept as it was`);
    }
  });
  m.layers.forEach((l, i) => {
    // a gzip layer zstd would not shrink is kept as it was
    const pipe = l.mediaType.endsWith('+zstd') ? 'zstd -dc' : /gzip$/.test(l.mediaType) ? 'gzip -dc' : 'cat';
    const url = `http://${BASIC}/v2/hooks/remix-${run}/blobs/${l.digest}`;
    const got = sh('bash', ['-c', `set -o pipefail; curl -sfL -u ${CREDS} ${url} | ${pipe} | sha256sum`]);
    assert.equal(`sha256:${got.slice(0, 64)}`, cfg.rootfs.diff_ids[i], `layer ${i} decompresses to its diff_id`);
    const n = sh('bash', ['-c', `set -o pipefail; curl -sfL -u ${CREDS} ${url} | ${pipe} | tar -t | wc -l`]);
    assert.ok(Number(n) > 0, `layer ${i} is a tar`);
  });
  // skopeo reads it whole (digests checked as it copies)
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lamina-hook-z-'));
  sh('skopeo', ['copy', '-q', '--src-tls-verify=false', '--src-creds', CREDS, `docker://${z}`, `oci:${dir}/l:z`]);
  fs.rmSync(dir, { recursive: true, force: true });
});

test('unsigned, wrongly signed, stale and replayed hooks are refused and change nothing', async () => {
  const dest = `${PLAIN}/hooks/refused-${run}:x`;
  const job = JSON.stringify({ base: BASE, dest, files: [{ name: 'a.txt', data: 'aGk=' }] });
  const refusals = [
    [{}, /missing X-Lamina-Signature/],
    [signed(job, { secret: 'not-the-secret-0123456789' }), /does not match/],
    [{ ...signed(job), 'x-lamina-signature': `sha256=${'0'.repeat(64)}` }, /does not match/],
    [signed(job, { ts: Math.floor(Date.now() / 1000) - 3600 }), /3600s from this server's clock|360[0-9]s from/],
    [{ ...signed(job), 'x-lamina-timestamp': 'yesterday' }, /X-Lamina-Timestamp/],
    [{ 'x-lamina-signature': 'md5=abc', 'x-lamina-timestamp': '1' }, /not sha256=/],
  ];
  for (const [headers, why] of refusals) {
    const r = await hook('affix', job, { headers });
    assert.equal(r.status, 401, JSON.stringify(r.json));
    assert.match(r.json.errors[0].message, why);
    assert.ok(!JSON.stringify(r.json).includes(SECRET));
  }
  // a body changed after signing
  const h = signed(job);
  const r0 = await hook('affix', job.replace('a.txt', 'b.txt'), { headers: h });
  assert.equal(r0.status, 401);
  assert.equal(tagDigest(dest), null, 'nothing was pushed');

  // the real one runs once; the same request again is a replay
  const r1 = await hook('affix', job, { headers: h });
  assert.equal(r1.status, 200, JSON.stringify(r1.json));
  // move the tag away, so a second run would show
  sh('skopeo', ['copy', '-q', '--src-tls-verify=false', '--dest-tls-verify=false', `docker://${BASE}`, `docker://${dest}`]);
  const moved = tagDigest(dest);
  const r2 = await hook('affix', job, { headers: h });
  assert.equal(r2.status, 409, JSON.stringify(r2.json));
  assert.match(r2.json.errors[0].message, /replayed/);
  assert.equal(tagDigest(dest), moved, 'the replay pushed nothing');
});

test('bad jobs are refused before they start, with what was wrong', async () => {
  let r = await hook('affix', { base: BASE, dest: `${PLAIN}/x:y`, tar: { url: 'file:///etc/passwd' } });
  assert.equal(r.status, 400);
  assert.match(r.json.errors[0].message, /not an http\(s\) URL/);
  r = await hook('affix', { base: BASE, dest: `${PLAIN}/x:y`, tar: { url: `${filesUrl}/f/x` }, password: 'x' });
  assert.equal(r.status, 400, 'credentials cannot come in a hook body');
  assert.match(r.json.errors[0].message, /unknown field `password`/);
  r = await hook('affix', { base: BASE, dest: 'registry.example.com/x:y', tar: { url: `${filesUrl}/f/x` } });
  assert.equal(r.status, 403);
  assert.match(r.json.errors[0].message, /registry\.example\.com is not on this Worker's allow list/);
  r = await hook('delete', { base: BASE });
  assert.equal(r.status, 400);
  assert.match(r.json.errors[0].message, /hooks are affix, remix, zstd, pack and convert/);
  const big = JSON.stringify({ base: BASE, dest: `${PLAIN}/x:y`, files: [{ name: 'a', data: 'A'.repeat(200000) }] });
  r = await hook('affix', big);
  assert.equal(r.status, 413);
});

test('a job that fails answers 422 with the reason and leaves no tag', async () => {
  const cases = [
    [{ base: `${PLAIN}/fixtures/no-such-image:latest`, files: [{ name: 'a', data: 'aGk=' }] }, /no-such-image|MANIFEST_UNKNOWN|NAME_UNKNOWN|404/],
    [{ base: BASE, files: [{ name: 'm.bin', url: `${filesUrl}/chunked/model.bin` }] }, /no Content-Length/],
    [{ base: BASE, files: [{ name: 'm.bin', url: `${filesUrl}/short/tok.json` }] }, /short of its Content-Length|Network connection lost/],
    [{ base: BASE, tar: { url: `${filesUrl}/f/tok.json` } }, /not a tar archive/],
    [{ base: BASE, tar: { url: `${filesUrl}/f/missing.tar` } }, /HTTP 404/],
  ];
  for (const [i, [job, why]] of cases.entries()) {
    const dest = `${PLAIN}/hooks/failed-${run}:${i}`;
    const r = await hook('affix', { ...job, dest });
    assert.equal(r.status, 422, `${i}: ${JSON.stringify(r.json)}`);
    assert.equal(r.json.status, 'failed');
    assert.match(r.json.error, why, `${i}`);
    assert.equal(tagDigest(dest), null, `${i}: no tag`);
  }
});

test('a hook answers 202 at once when asked, and /jobs/ID reports the job to its end', async () => {
  const dest = `${PLAIN}/hooks/async-${run}:1`;
  const r = await hook('affix', { base: BASE, dest, files: [{ name: 'model.bin', url: `${filesUrl}/f/model.bin` }] }, { query: '?wait=0' });
  assert.equal(r.status, 202, JSON.stringify(r.json));
  assert.match(r.json.id, /^[0-9a-f]{32}$/);
  assert.equal(r.headers.get('location'), `/jobs/${r.json.id}`);
  let st;
  for (let i = 0; i < 240; i++) {
    st = await (await fetch(`${EDGE}/jobs/${r.json.id}`)).json();
    if (st.status === 'done' || st.status === 'failed') break;
    await new Promise((ok) => setTimeout(ok, 250));
  }
  assert.equal(st.status, 'done', JSON.stringify(st));
  assert.equal(st.read, 24 << 20);
  assert.equal(tagDigest(dest), st.image.split('@')[1]);
  let n = await fetch(`${EDGE}/jobs/${'0'.repeat(32)}`);
  assert.equal(n.status, 404);
  n = await fetch(`${EDGE}/jobs/..%2F..%2Fetc`);
  assert.equal(n.status, 404);
});

// ---- model artifacts: /hooks/pack and /hooks/convert against `lamina pack` and `lamina convert`

const EPOCH = 946684800;
const model = path.join(served, 'model');
let lamina;
const litter = fs.mkdtempSync(path.join(os.tmpdir(), 'lamina-hook-cli-'));

/// A safetensors file with a real header: `tensors` is [[name, dtype, shape]]; the data is
/// pseudo-random, as long as the offsets say.
function safetensors(tensors, seed) {
  const width = { BF16: 2, F16: 2, F32: 4 };
  const header = {};
  let at = 0;
  for (const [name, dtype, shape] of tensors) {
    const n = shape.reduce((a, b) => a * b, 1) * width[dtype];
    header[name] = { dtype, shape, data_offsets: [at, at + n] };
    at += n;
  }
  header.__metadata__ = { format: 'pt' };
  let json = JSON.stringify(header);
  while (json.length % 8) json += ' ';
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  const data = Buffer.from(gen(Math.ceil(at / 1048576), seed)).subarray(0, at);
  return Buffer.concat([len, Buffer.from(json), data]);
}

/// The model folder, path -> bytes (a hidden file both lamina pack and the hook leave out).
const modelFiles = {
  // 8 MiB of weights: more than one 8 MiB chunk with its header
  'model.safetensors': safetensors([['model.embed.weight', 'BF16', [2048, 2048]], ['model.norm.weight', 'F32', [2048]]], 11),
  'unet/x.safetensors': safetensors([['conv.weight', 'F16', [64, 64]]], 12),
  'config.json': Buffer.from('{"model_type": "llama", "torch_dtype": "bfloat16", "transformers_version": "4.44.0", "hidden_size": 2048}\n'),
  'tokenizer.json': Buffer.from('{"version": "1.0", "model": {"type": "BPE", "vocab": {"a": 0}}}\n'),
  'README.md': Buffer.from('# tiny\n\nA model-shaped test artifact.\n'),
  '.gitattributes': Buffer.from('*.safetensors filter=lfs\n'),
};

/// The pack hook's files: from the file server, README.md inline.
function packFiles() {
  return Object.keys(modelFiles).map((p) => (p === 'README.md'
    ? { path: p, data: modelFiles[p].toString('base64') }
    : { path: p, url: `${filesUrl}/f/model/${p}` }));
}

/// Runs the native CLI as the end-to-end tests do (no credentials, its own cache, the same
/// SOURCE_DATE_EPOCH as the hooks' mtime); gives the digest of the `name@sha256:...` it printed.
function cli(args) {
  const env = { ...process.env, SOURCE_DATE_EPOCH: `${EPOCH}`, DOCKER_CONFIG: '/nonexistent-lamina-test', LAMINA_CACHE_DIR: path.join(litter, 'cache') };
  for (const k of ['COG_TOKEN', 'LAMINA_USERNAME', 'LAMINA_PASSWORD', 'LAMINA_REGISTRY']) delete env[k];
  const out = execFileSync(lamina, [...args, '-q'], { encoding: 'utf8', env, cwd: served }).trim();
  const m = out.match(/@(sha256:[0-9a-f]{64})$/);
  assert.ok(m, `lamina ${args.join(' ')} printed ${out}`);
  return m[1];
}

async function json(url) {
  const r = await fetch(url, { headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } });
  assert.equal(r.status, 200, url);
  return r.json();
}

/// The manifest and config of `repo` at `reference` in the plain registry.
async function artifact(repo, reference) {
  const m = await json(`http://${PLAIN}/v2/${repo}/manifests/${reference}`);
  return { m, cfg: await json(`http://${PLAIN}/v2/${repo}/blobs/${m.config.digest}`) };
}

/// The plain registry's access-log lines since `from` (its length before).
// `from` is a byte offset (the log's size before): slice the bytes, not the decoded text, or a
// multi-byte character earlier in the log moves the cut past the lines wanted
function plainLog(from) {
  return fs.readFileSync('/tmp/lamina-test/run/plain.log').subarray(from).toString('utf8').split('\n');
}

before(() => {
  for (const [p, b] of Object.entries(modelFiles)) {
    fs.mkdirSync(path.dirname(path.join(model, p)), { recursive: true });
    fs.writeFileSync(path.join(model, p), b);
  }
  lamina = process.env.LAMINA_BIN;
  if (!lamina) {
    execFileSync('cargo', ['build', '-q', '-p', 'lamina-cli', '--bin', 'lamina'], { cwd: root, stdio: 'inherit' });
    lamina = path.join(process.env.CARGO_TARGET_DIR || path.join(root, 'target'), 'debug/lamina');
  }
});

after(() => fs.rmSync(litter, { recursive: true, force: true }));

const packed = (format) => `${PLAIN}/hooks/pack-${run}:${format}`;

test('a pack hook builds a ModelPack, a ModelKit and a Docker model with lamina pack\'s digests', async () => {
  for (const format of ['modelpack', 'modelkit', 'docker']) {
    const want = cli(['pack', './model/', '--dest', `${PLAIN}/hooks/pack-cli-${run}:${format}`, '--name', 'tiny', '--format', format]);
    const dest = packed(format);
    // modelpack is the default format
    const body = { dest, ...(format === 'modelpack' ? {} : { format }), name: 'tiny', mtime: EPOCH, files: packFiles() };
    const r = await ended(await hook('pack', body));
    assert.equal(r.status, 200, `${format}: ${JSON.stringify(r.json)}`);
    assert.equal(r.json.image, `${PLAIN}/hooks/pack-${run}@${want}`, `${format}: the hook made what lamina pack made`);
    assert.equal(tagDigest(dest), want, `${format}: the tag names it`);
    assert.ok(r.json.log.some((l) => /left out 1 hidden .*\.gitattributes/.test(l)), JSON.stringify(r.json.log));
    const { m, cfg } = await artifact(`hooks/pack-${run}`, format);
    const paths = m.layers.map((l) => l.annotations['org.cncf.model.filepath']);
    if (format === 'modelpack') {
      assert.equal(m.artifactType, 'application/vnd.cncf.model.manifest.v1+json');
      assert.deepEqual(paths, ['README.md', 'config.json', 'model.safetensors', 'tokenizer.json', 'unet/x.safetensors']);
      // raw layers: each blob is the file
      m.layers.forEach((l, i) => assert.equal(l.digest, `sha256:${sha256(modelFiles[paths[i]])}`, paths[i]));
      assert.deepEqual(cfg.descriptor, { name: 'tiny', family: 'llama' });
      assert.deepEqual(cfg.config, { architecture: 'transformer', format: 'safetensors', paramSize: '4.2M', precision: 'bfloat16,float16,float32' });
      assert.deepEqual(cfg.modelfs.diffIds, m.layers.map((l) => l.digest));
    } else if (format === 'modelkit') {
      assert.equal(m.config.mediaType, 'application/vnd.kitops.modelkit.config.v1+json');
      assert.ok(m.layers.every((l) => l.mediaType.endsWith('.v1.tar')), JSON.stringify(m.layers));
      assert.equal(cfg.package.name, 'tiny');
      assert.equal(cfg.model.path, 'model.safetensors');
      // a tar per file, with the directories above it (kit's), the file as it was
      const url = `http://${PLAIN}/v2/hooks/pack-${run}/blobs/${m.layers.find((l) => l.annotations['org.cncf.model.filepath'] === 'unet/x.safetensors').digest}`;
      assert.equal(sh('bash', ['-c', `set -o pipefail; curl -sf ${url} | tar -t`]), 'unet/\nunet/x.safetensors\n');
      const got = sh('bash', ['-c', `set -o pipefail; curl -sf ${url} | tar -xO unet/x.safetensors | sha256sum`]);
      assert.equal(got.slice(0, 64), sha256(modelFiles['unet/x.safetensors']));
    } else {
      assert.equal(m.config.mediaType, 'application/vnd.docker.ai.model.config.v0.2+json');
      assert.equal(cfg.config.format, 'safetensors');
      assert.equal(cfg.descriptor.created, '2000-01-01T00:00:00Z');
      assert.deepEqual(cfg.rootfs.diff_ids, m.layers.map((l) => l.digest));
    }
  }
});

test('a convert hook makes every other format with lamina convert\'s digests, mounting what it keeps', async () => {
  const kit = `${PLAIN}/hooks/conv-${run}:kit`;
  const cases = [
    // [label, source, to, base]: wrapped; kept (mounted); unwrapped; re-packed under models/;
    // wrapped under models/
    ['kit', packed('modelpack'), 'modelkit'],
    ['docker', packed('modelpack'), 'docker'],
    ['kit-docker', kit, 'docker'],
    ['kit-car', kit, 'modelcar', BASE],
    ['car', packed('modelpack'), 'modelcar', BASE],
  ];
  for (const [label, src, to, base] of cases) {
    const want = cli(['convert', src, `${PLAIN}/hooks/conv-cli-${run}:${label}`, '--to', to, ...(base ? ['--base', base] : [])]);
    const dest = `${PLAIN}/hooks/conv-${run}:${label}`;
    const logAt = fs.statSync('/tmp/lamina-test/run/plain.log').size;
    const r = await hook('convert', { src, dest, to, ...(base ? { base } : {}), mtime: EPOCH });
    assert.equal(r.status, 200, `${label}: ${JSON.stringify(r.json)}`);
    assert.equal(r.json.image, `${PLAIN}/hooks/conv-${run}@${want}`, `${label}: the hook made what lamina convert made`);
    assert.equal(tagDigest(dest), want, `${label}: the tag names it`);
    const patches = plainLog(logAt).filter((l) => l.includes(`PATCH /v2/hooks/conv-${run}/blobs/uploads/`) && !l.includes('level='));
    const mounts = plainLog(logAt).filter((l) => l.includes(`POST /v2/hooks/conv-${run}/blobs/uploads/?`) && l.includes('mount=') && !l.includes('level='));
    if (label === 'docker') {
      // every raw layer kept: mounted, not a byte of them sent
      assert.equal(patches.length, 0, patches.join('\n'));
      assert.equal(mounts.length, 5, mounts.join('\n'));
      const { m } = await artifact(`hooks/conv-${run}`, label);
      const { m: mp } = await artifact(`hooks/pack-${run}`, 'modelpack');
      assert.deepEqual(m.layers.map((l) => l.digest), mp.layers.map((l) => l.digest));
    } else {
      assert.ok(patches.length > 0, `${label}: re-packed layers were sent`);
    }
  }
  // the unwrapped Docker model holds the files as they were
  const out = path.join(litter, 'out');
  execFileSync(lamina, ['extract', '-q', `${PLAIN}/hooks/conv-${run}:kit-docker`, '-o', `${out}/`], { env: { ...process.env, DOCKER_CONFIG: '/nonexistent-lamina-test' } });
  for (const [p, b] of Object.entries(modelFiles)) {
    if (p.startsWith('.')) assert.ok(!fs.existsSync(path.join(out, p)), `${p} was left out`);
    else assert.equal(sha256(fs.readFileSync(path.join(out, p))), sha256(b), p);
  }
});

/// `lamina extract REF -o DIR/` into a fresh folder of the litter; gives the folder.
function extracted(ref, name) {
  const out = path.join(litter, name);
  execFileSync(lamina, ['extract', '-q', ref, '-o', `${out}/`], { env: { ...process.env, DOCKER_CONFIG: '/nonexistent-lamina-test' } });
  return out;
}

/// The model folder's files (the hidden one left out) are in `dir`, byte for byte.
function holdsModel(dir, what) {
  for (const [p, b] of Object.entries(modelFiles)) {
    if (p.startsWith('.')) assert.ok(!fs.existsSync(path.join(dir, p)), `${what}: ${p} was left out`);
    else assert.equal(sha256(fs.readFileSync(path.join(dir, p))), sha256(b), `${what}: ${p}`);
  }
}

test('a pack hook with tar: true makes lamina pack --tar\'s ModelPack, each file a tar layer', async () => {
  const want = cli(['pack', './model/', '--dest', `${PLAIN}/hooks/pack-cli-${run}:tar`, '--name', 'tiny', '--format', 'modelpack', '--tar']);
  const dest = packed('tar');
  const r = await hook('pack', { dest, name: 'tiny', mtime: EPOCH, tar: true, files: packFiles() });
  assert.equal(r.status, 200, JSON.stringify(r.json));
  assert.equal(r.json.image, `${PLAIN}/hooks/pack-${run}@${want}`, 'the hook made what lamina pack --tar made');
  assert.equal(tagDigest(dest), want);
  const { m, cfg } = await artifact(`hooks/pack-${run}`, 'tar');
  assert.ok(m.layers.every((l) => l.mediaType.startsWith('application/vnd.cncf.model.') && l.mediaType.endsWith('.v1.tar')), JSON.stringify(m.layers));
  // one entry per tar, at its path (no directories above it, unlike a ModelKit's)
  const x = m.layers.find((l) => l.annotations['org.cncf.model.filepath'] === 'unet/x.safetensors');
  const url = `http://${PLAIN}/v2/hooks/pack-${run}/blobs/${x.digest}`;
  assert.equal(sh('bash', ['-c', `set -o pipefail; curl -sf ${url} | tar -t`]), 'unet/x.safetensors\n');
  assert.deepEqual(cfg.modelfs.diffIds, m.layers.map((l) => l.digest));
  assert.equal(cfg.config.paramSize, '4.2M', 'the weights\' facts are read through the tar too');
  holdsModel(extracted(dest, 'tar-out'), 'tar: true');
});

test('a convert hook decompresses a ModelPack\'s tar+zstd layers as they stream into a ModelKit', async () => {
  // the model folder and a 24 MiB doc of hex text (about 12 MiB zstd): decompressed across
  // many reads of the source and several 8 MiB PATCHes
  const zmodel = path.join(served, 'zmodel');
  const files = { ...modelFiles, 'docs/corpus.md': Buffer.from(Buffer.from(gen(12, 31)).toString('hex')) };
  for (const [p, b] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(zmodel, p)), { recursive: true });
    fs.writeFileSync(path.join(zmodel, p), b);
  }
  // lamina pack --tar, then lamina zstd: the docs and configs tar+zstd, the weights plain tars
  const tars = `${PLAIN}/hooks/zconv-${run}:tar`;
  const zst = `${PLAIN}/hooks/zconv-${run}:zst`;
  cli(['pack', './zmodel/', '--dest', tars, '--name', 'tiny', '--tar']);
  cli(['zstd', tars, zst]);
  const { m: src } = await artifact(`hooks/zconv-${run}`, 'zst');
  const zstdLayers = src.layers.filter((l) => l.mediaType.endsWith('.tar+zstd'));
  assert.equal(zstdLayers.length, 4, `README, the corpus, config.json and tokenizer.json are zstd: ${JSON.stringify(src.layers)}`);
  const corpus = zstdLayers.find((l) => l.annotations['org.cncf.model.filepath'] === 'docs/corpus.md');
  assert.ok(corpus.size > 8 << 20 && corpus.size < 16 << 20, `${corpus.size} bytes of zstd`);

  const want = cli(['convert', zst, `${PLAIN}/hooks/zconv-cli-${run}:kit`, '--to', 'modelkit']);
  const dest = `${PLAIN}/hooks/zconv-${run}:kit`;
  const r = await hook('convert', { src: zst, dest, to: 'modelkit', mtime: EPOCH });
  assert.equal(r.status, 200, JSON.stringify(r.json));
  assert.equal(r.json.image, `${PLAIN}/hooks/zconv-${run}@${want}`, 'the hook made what lamina convert made');
  assert.equal(tagDigest(dest), want);
  assert.equal(r.json.log.filter((l) => /^decompressing /.test(l)).length, zstdLayers.length, JSON.stringify(r.json.log));
  const { m } = await artifact(`hooks/zconv-${run}`, 'kit');
  assert.ok(m.layers.every((l) => l.mediaType.endsWith('.v1.tar')), `no zstd in a ModelKit: ${JSON.stringify(m.layers)}`);
  // each decompressed layer is the plain tar lamina pack --tar made of the file
  const { m: plain } = await artifact(`hooks/zconv-${run}`, 'tar');
  const byPath = (mm) => Object.fromEntries(mm.layers.map((l) => [l.annotations['org.cncf.model.filepath'], l.digest]));
  assert.deepEqual(byPath(m), byPath(plain));
  const out = extracted(dest, 'zconv-out');
  for (const [p, b] of Object.entries(files)) {
    if (p.startsWith('.')) assert.ok(!fs.existsSync(path.join(out, p)), `${p} was left out`);
    else assert.equal(sha256(fs.readFileSync(path.join(out, p))), sha256(b), p);
  }
});

test('an upload session the registry loses costs one more read of the source, not the job', async () => {
  // each job's destination is the lossy front, which loses the first upload session to get a
  // second PATCH (8 MiB chunks): the bytes of the first are confirmed and gone from the Worker,
  // so it reads its source again from the start, makes the blob again and sends it in a new
  // session; the result is what an undisturbed run makes
  const lost = async (kind, body, what) => {
    hits.clear();
    lossy.lose(1);
    const at = counting.log.length;
    const r = await hook(kind, body);
    assert.equal(r.status, 200, `${what}: ${JSON.stringify(r.json)}`);
    assert.equal(lossy.lost.size, 1, `${what}: a session was lost`);
    assert.equal(r.json.log.filter((l) => l === 'the registry lost the upload: starting it over').length, 1, `${what}: ${r.json.log.join('\n')}`);
    return { r, downloads: (digest) => counting.log.slice(at).filter((l) => l.method === 'GET' && l.path.endsWith(`/blobs/${digest}`)).length };
  };
  const L = lossy.host;

  // pack: model.safetensors (8 MiB and its header) fetched again, raw and wrapped into a tar
  for (const format of ['modelpack', 'modelkit']) {
    const want = cli(['pack', './model/', '--dest', `${PLAIN}/hooks/lost-cli-${run}:${format}`, '--name', 'tiny', '--format', format]);
    const { r } = await lost('pack', { dest: `${L}/hooks/lost-pack-${run}:${format}`, format, name: 'tiny', mtime: EPOCH, files: packFiles() }, `pack ${format}`);
    assert.equal(r.json.image, `${L}/hooks/lost-pack-${run}@${want}`, `pack ${format}: lamina pack's digest`);
    assert.equal(hits.get('/f/model/model.safetensors'), 2, `pack ${format}: the lost file fetched again`);
    assert.equal(hits.get('/f/model/config.json'), 1, `pack ${format}: the others once`);
  }

  // affix: a layer built of fetched files, and a given tar (9 MiB of weights each: two PATCHes)
  fs.mkdirSync(path.join(served, 'big/src/weights'), { recursive: true });
  fs.writeFileSync(path.join(served, 'big/src/weights/big.bin'), gen(9, 6));
  sh('tar', ['-C', path.join(served, 'big'), '-cf', path.join(served, 'big.tar'), 'src']);
  const big = `${filesUrl}/f/big/src/weights/big.bin`;
  const filesJob = (dest, base) => ({ base, dest, files: [{ name: 'big.bin', url: big }, { name: 'README.md', data: Buffer.from('# lost\n').toString('base64') }] });
  const clean = await hook('affix', filesJob(`${PLAIN}/hooks/lost-clean-${run}:files`, BASE));
  assert.equal(clean.status, 200, JSON.stringify(clean.json));
  await lost('affix', filesJob(`${L}/hooks/lost-affix-${run}:files`, `${L}/fixtures/base:latest`), 'affix files');
  assert.equal(hits.get('/f/big/src/weights/big.bin'), 2, 'affix files: fetched again');
  const top = async (repo, tag) => (await artifact(repo, tag)).m.layers.at(-1);
  assert.deepEqual(await top(`hooks/lost-affix-${run}`, 'files'), await top(`hooks/lost-clean-${run}`, 'files'), 'affix files: the same layer');
  await lost('affix', { base: `${L}/fixtures/base:latest`, dest: `${L}/hooks/lost-affix-${run}:tar`, tar: { url: `${filesUrl}/f/big.tar` } }, 'affix tar');
  assert.equal(hits.get('/f/big.tar'), 2, 'affix tar: fetched again');
  assert.equal((await top(`hooks/lost-affix-${run}`, 'tar')).digest, `sha256:${sha256(fs.readFileSync(path.join(served, 'big.tar')))}`);

  // convert from the counting front to the lossy one (two registries to the Worker): a raw file
  // wrapped into a tar (ModelKit), and raw layers copied across as they are (Docker)
  const weights = (await artifact(`hooks/lost-cli-${run}`, 'modelpack')).m.layers
    .find((l) => l.annotations['org.cncf.model.filepath'] === 'model.safetensors').digest;
  for (const to of ['modelkit', 'docker']) {
    const want = cli(['convert', `${PLAIN}/hooks/lost-cli-${run}:modelpack`, `${PLAIN}/hooks/lost-conv-cli-${run}:${to}`, '--to', to]);
    const { r, downloads } = await lost('convert', { src: `${counting.host}/hooks/lost-cli-${run}:modelpack`, dest: `${L}/hooks/lost-conv-${to}-${run}:1`, to, mtime: EPOCH }, `convert to ${to}`);
    assert.equal(r.json.image, `${L}/hooks/lost-conv-${to}-${run}@${want}`, `convert to ${to}: lamina convert's digest`);
    assert.equal(downloads(weights), 2, `convert to ${to}: the weights downloaded again for the new session`);
  }

  // zstd: a gzip layer of 9 MiB that zstd does not shrink, recoded (and stored as zstd makes
  // it, or kept) from the counting front: downloaded once more than an undisturbed run does
  const src = `${counting.host}/hooks/lost-zsrc-${run}:1`;
  const t = await hook('affix', { base: BASE, dest: `${PLAIN}/hooks/lost-zsrc-${run}:1`, compression: 'gzip', files: [{ name: 'big.bin', url: big }] });
  assert.equal(t.status, 200, JSON.stringify(t.json));
  const layer = (await artifact(`hooks/lost-zsrc-${run}`, '1')).m.layers.at(-1).digest;
  const at = counting.log.length;
  const z = await hook('zstd', { image: src, dest: `${PLAIN}/hooks/lost-zclean-${run}:1` });
  assert.equal(z.status, 200, JSON.stringify(z.json));
  const once = counting.log.slice(at).filter((l) => l.method === 'GET' && l.path.endsWith(`/blobs/${layer}`)).length;
  const { r, downloads } = await lost('zstd', { image: src, dest: `${L}/hooks/lost-zstd-${run}:1` }, 'zstd');
  assert.equal(r.json.image.split('@')[1], z.json.image.split('@')[1], 'zstd: the same image');
  assert.equal(downloads(layer), once + 1, 'zstd: the layer downloaded again');
});

test('pack and convert hooks refuse a bad signature and bad bodies before they start', async () => {
  const dest = `${PLAIN}/hooks/model-refused-${run}:x`;
  const job = JSON.stringify({ dest, files: packFiles() });
  let r = await hook('pack', job, { headers: signed(job, { secret: 'not-the-secret-0123456789' }) });
  assert.equal(r.status, 401, JSON.stringify(r.json));
  assert.match(r.json.errors[0].message, /does not match/);
  const conv = JSON.stringify({ src: packed('modelpack'), dest, to: 'docker' });
  r = await hook('convert', conv, { headers: { ...signed(conv), 'x-lamina-signature': `sha256=${'1'.repeat(64)}` } });
  assert.equal(r.status, 401, JSON.stringify(r.json));
  assert.equal(tagDigest(dest), null, 'nothing was pushed');

  const files = packFiles();
  const bad = [
    ['pack', { files }, 400, /missing field `dest`/],
    ['pack', { dest, format: 'zip', files }, 400, /format "zip": modelpack \(the default\), modelkit or docker/],
    ['pack', { dest, files: [{ path: '../x', url: `${filesUrl}/f/model/README.md` }] }, 400, /"\.\.\/x": the path climbs out/],
    ['pack', { dest, files: [{ path: '/etc/passwd', url: `${filesUrl}/f/model/README.md` }] }, 400, /"\/etc\/passwd": the path is absolute/],
    ['pack', { dest, format: 'modelkit', tar: true, files }, 400, /tar is for modelpack/],
    ['pack', { dest, files: [{ path: 'a', url: 'file:///etc/passwd' }] }, 400, /not an http\(s\) URL/],
    ['convert', { src: packed('modelpack'), dest, to: 'modelcar' }, 400, /to "modelcar" needs base/],
    ['convert', { src: packed('modelpack'), dest, to: 'onnx' }, 400, /to "onnx": modelpack, modelkit, docker or modelcar/],
    ['convert', { src: packed('modelpack'), dest, to: 'docker', token: 'x' }, 400, /unknown field `token`/],
    ['convert', { src: 'registry.example.com/m:1', dest, to: 'docker' }, 403, /registry\.example\.com is not on this Worker's allow list/],
  ];
  for (const [kind, body, status, why] of bad) {
    r = await hook(kind, body);
    assert.equal(r.status, status, `${kind} ${JSON.stringify(body)}: ${JSON.stringify(r.json)}`);
    assert.match(r.json.errors[0].message, why);
  }
  assert.equal(tagDigest(dest), null, 'nothing was pushed');
});

test('a pack or convert job that fails answers 422 with the reason and leaves no tag', async () => {
  const cases = [
    ['pack', { files: [{ path: 'model.safetensors', url: `${filesUrl}/f/model/missing.safetensors` }] }, /HTTP 404/],
    // a ModelKit's tar header needs the size first
    ['pack', { format: 'modelkit', files: [{ path: 'model.safetensors', url: `${filesUrl}/chunked/model/model.safetensors` }] }, /no Content-Length/],
    ['pack', { files: [{ path: 'model.safetensors', url: `${filesUrl}/short/model/config.json` }] }, /short of its Content-Length|Network connection lost/],
    ['convert', { src: BASE, to: 'modelpack' }, /no modelcar layers/],
    ['convert', { src: packed('modelpack'), to: 'modelpack' }, /it is a ModelPack artifact already/],
  ];
  for (const [i, [kind, job, why]] of cases.entries()) {
    const dest = `${PLAIN}/hooks/model-failed-${run}:${i}`;
    const r = await hook(kind, { ...job, dest });
    assert.equal(r.status, 422, `${i}: ${JSON.stringify(r.json)}`);
    assert.equal(r.json.status, 'failed');
    assert.match(r.json.error, why, `${i}`);
    assert.equal(tagDigest(dest), null, `${i}: no tag`);
  }
});
