// The edge Worker's signed hooks in the real runtime (workerd via `wrangler dev --local`), against
// the local registries: plain (:5100), Basic (:5101) and token auth (:5103, token server :5104),
// with credentials only from the Worker's REGISTRY_AUTH. Layers come from a local file server.
// Results are checked with skopeo, umoci, zstd and tar.
//   (edge/build.sh; registries and fixtures running) then cd tests/web && npm test
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import crypto from 'node:crypto';
import { sh, sha256, gen, checkPushed, startWrangler, stop } from './common.mjs';

const PORT = 8798;
const EDGE = `http://127.0.0.1:${PORT}`;
const SECRET = 'hook-secret-for-tests-0123456789';
const PLAIN = '127.0.0.1:5100';
const BASIC = '127.0.0.1:5101';
const TOKEN = '127.0.0.1:5103';
const CREDS = 'testuser:testpass';
const BASE = `${PLAIN}/fixtures/base:latest`;
const run = `${process.pid}`;
let dev, files, filesUrl;
const served = fs.mkdtempSync(path.join(os.tmpdir(), 'lamina-hook-src-'));

/// A file server: `/f/NAME` with Content-Length, `/chunked/NAME` without it, `/short/NAME`
/// announcing more bytes than it sends.
function startFiles() {
  files = http.createServer((req, res) => {
    const [, mode, name] = new URL(req.url, 'http://x').pathname.split('/');
    const p = path.join(served, name || '');
    if (!name || !fs.existsSync(p)) { res.writeHead(404); res.end(); return; }
    const size = fs.statSync(p).size;
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

function signed(body, { secret = SECRET, ts = Math.floor(Date.now() / 1000) } = {}) {
  const sig = crypto.createHmac('sha256', secret).update(`${ts}.${body}`).digest('hex');
  return { 'x-lamina-signature': `sha256=${sig}`, 'x-lamina-timestamp': `${ts}` };
}

async function hook(kind, job, { headers, query = '' } = {}) {
  const body = typeof job === 'string' ? job : JSON.stringify(job);
  const r = await fetch(`${EDGE}/hooks/${kind}${query}`, {
    method: 'POST', body, headers: { 'content-type': 'application/json', ...(headers ?? signed(body)) },
  });
  return { status: r.status, json: await r.json(), headers: r.headers };
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
  dev = await startWrangler(PORT, {
    ALLOWED_REGISTRIES: [PLAIN, BASIC, TOKEN, '127.0.0.1:5104'].join(','),
    HOOK_SECRET: SECRET,
    REGISTRY_AUTH: JSON.stringify({ [BASIC]: { username: 'testuser', password: 'testpass' }, [TOKEN]: { username: 'testuser', password: 'testpass' } }),
    CHUNK_MIB: '8',
  });
});

after(() => {
  stop(dev);
  files?.close();
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
  assert.match(r.json.errors[0].message, /hooks are affix, remix and zstd/);
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
