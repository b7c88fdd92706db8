// The edge Worker's reads inside an image (GET /ls, GET /inspect) in the real runtime (workerd
// via `wrangler dev --local`) against the local registries: plain (:5100) and Basic auth
// (:5101). A modelcar (an uncompressed model layer on the gzip base) is made with `lamina pack`,
// and what the Worker answers is what `lamina ls --json` / `lamina inspect --json` print. An
// unsigned read gets only what a registry serves anonymously; the Worker's REGISTRY_AUTH is
// used only for a read signed as hooks are (over its path and query).
//   (edge/build.sh; registries and fixtures running) then cd tests/web && npm test
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import crypto from 'node:crypto';
import { startWrangler, stop, lamina, modelFolder } from './common.mjs';

const PORT = 8799;
const EDGE = `http://127.0.0.1:${PORT}`;
const SECRET = 'peek-secret-for-tests-0123456789';
const PLAIN = '127.0.0.1:5100';
const BASIC = '127.0.0.1:5101';
const CREDS = 'testuser:testpass';
const BASE = `${PLAIN}/fixtures/base:latest`;
const run = `${process.pid}`;
const PUBLIC = `${PLAIN}/peek/mc-${run}:v1`;
const PRIVATE = `${BASIC}/peek/mc-${run}:v1`;
const litter = fs.mkdtempSync(path.join(os.tmpdir(), 'lamina-peek-'));
let dev;

before(async () => {
  const m = modelFolder(litter);
  const env = { SOURCE_DATE_EPOCH: '946684800' };
  lamina(['pack', '-q', m.dir, '--format', 'modelcar', '--base', BASE, '--dest', PUBLIC], env);
  lamina(['pack', '-q', m.dir, '--format', 'modelcar', '--base', BASE, '--dest', PRIVATE,
    '--dest-creds', CREDS], env);
  dev = await startWrangler(PORT, {
    ALLOWED_REGISTRIES: [PLAIN, BASIC].join(','),
    HOOK_SECRET: SECRET,
    REGISTRY_AUTH: JSON.stringify({ [BASIC]: { username: 'testuser', password: 'testpass' } }),
  });
});

after(() => {
  stop(dev);
  fs.rmSync(litter, { recursive: true, force: true });
});

/// The headers of a read signed over `pathAndQuery`.
function signed(pathAndQuery, { secret = SECRET, ts = Math.floor(Date.now() / 1000) } = {}) {
  const sig = crypto.createHmac('sha256', secret).update(`${ts}.${pathAndQuery}`).digest('hex');
  return { 'x-lamina-signature': `sha256=${sig}`, 'x-lamina-timestamp': `${ts}` };
}

/// `GET /what?query`: its status and JSON.
async function read(what, params, { sign = false, headers = {} } = {}) {
  const q = new URLSearchParams(params).toString();
  const pq = `/${what}${q ? `?${q}` : ''}`;
  const r = await fetch(`${EDGE}${pq}`, { headers: { ...(sign ? signed(pq) : {}), ...headers } });
  const text = await r.text();
  try {
    return { status: r.status, json: JSON.parse(text) };
  } catch (_) {
    assert.fail(`${pq} answered ${r.status}, not JSON: ${text.slice(0, 2000)}`);
  }
}

/// What the CLI prints for `lamina CMD REF [PATH] --json`.
function cli(cmd, ref, p, creds) {
  const args = [cmd, '-q', ref, ...(p ? [p] : []), '--json'];
  return JSON.parse(lamina(args, creds ? { LAMINA_SRC_CREDS: creds } : {}));
}

/// The Worker's answer is the CLI's: the entries (or files and total), the format, what reading
/// cost.
function sameAsCli(cmd, got, want) {
  const keys = cmd === 'ls' ? ['format', 'entries', 'read'] : ['files', 'total', 'read'];
  for (const k of keys) assert.deepEqual(got[k], want[k], `${cmd}: ${k} as the CLI's`);
}

test('GET /ls lists a modelcar as lamina ls --json does: all of it, and under a path', async () => {
  for (const p of [null, 'models', 'models/model.safetensors']) {
    const r = await read('ls', { ref: PUBLIC, ...(p ? { path: p } : {}) });
    assert.equal(r.status, 200, JSON.stringify(r.json));
    sameAsCli('ls', r.json, cli('ls', PUBLIC, p));
  }
  const r = await read('ls', { ref: PUBLIC, path: 'models' });
  assert.ok(r.json.entries.some((e) => e.path === 'models/unet/x.safetensors' && e.type === 'file'),
    JSON.stringify(r.json.entries));
  // the model layer is read by ranges; only the base's gzip layers are streamed
  assert.ok(r.json.read.rangeRequests > 0, JSON.stringify(r.json.read));
  const one = await read('ls', { ref: PUBLIC, layer: `${r.json.entries.find((e) => e.path === 'models/config.json').layer}` });
  assert.equal(one.status, 200, JSON.stringify(one.json));
  assert.deepEqual(one.json.read.streamedLayers, [], 'one uncompressed layer: no stream');
  assert.equal((await read('ls', { ref: PUBLIC, path: 'models/nothing' })).status, 404);
});

test('GET /inspect reads the weight headers as lamina inspect --json does', async () => {
  for (const p of [null, 'models/model.safetensors', 'models/unet']) {
    const r = await read('inspect', { ref: PUBLIC, ...(p ? { path: p } : {}) });
    assert.equal(r.status, 200, JSON.stringify(r.json));
    sameAsCli('inspect', r.json, cli('inspect', PUBLIC, p));
  }
  const r = await read('inspect', { ref: PUBLIC, path: 'models/model.safetensors' });
  const [f] = r.json.files;
  assert.equal(f.format, 'safetensors');
  assert.equal(f.params, 512 * 1024);
  assert.deepEqual(f.metadata, { format: 'pt' });
  assert.deepEqual(r.json.read.streamedLayers, [], 'the top layer found the file: no base read');
});

test('a private image: an unsigned read is refused, a signed one uses the Worker\'s credentials', async () => {
  for (const what of ['ls', 'inspect']) {
    const anon = await read(what, { ref: PRIVATE });
    assert.equal(anon.status, 401, JSON.stringify(anon.json));
    const msg = anon.json.errors[0].message;
    assert.match(msg, /anonymously/, msg);
    assert.match(msg, /sign the request/, msg);
    const r = await read(what, { ref: PRIVATE }, { sign: true });
    assert.equal(r.status, 200, JSON.stringify(r.json));
    sameAsCli(what, r.json, cli(what, PRIVATE, null, CREDS));
  }
  // a wrong signature, a stale one, a signature over another query: 401, nothing read
  const q = new URLSearchParams({ ref: PRIVATE }).toString();
  const wrong = await read('ls', { ref: PRIVATE }, { headers: signed(`/ls?${q}`, { secret: 'another-secret-0123456789abcdef' }) });
  assert.equal(wrong.status, 401, JSON.stringify(wrong.json));
  const stale = await read('ls', { ref: PRIVATE }, { headers: signed(`/ls?${q}`, { ts: Math.floor(Date.now() / 1000) - 3600 }) });
  assert.equal(stale.status, 401, JSON.stringify(stale.json));
  const other = await read('ls', { ref: PRIVATE, path: 'models' }, { headers: signed(`/ls?${q}`) });
  assert.equal(other.status, 401, JSON.stringify(other.json));
  // the public image reads the same signed or not
  const pub = await read('ls', { ref: PUBLIC }, { sign: true });
  assert.equal(pub.status, 200, JSON.stringify(pub.json));
  sameAsCli('ls', pub.json, cli('ls', PUBLIC));
});

test('/ls and /inspect refuse registries off the allow list, a missing ref and other methods', async () => {
  for (const what of ['ls', 'inspect']) {
    const off = await read(what, { ref: '127.0.0.1:5103/peek/x:v1' }, { sign: true });
    assert.equal(off.status, 403, JSON.stringify(off.json));
    assert.match(off.json.errors[0].message, /127\.0\.0\.1:5103 is not on this Worker's allow list/);
    const none = await read(what, {});
    assert.equal(none.status, 400, JSON.stringify(none.json));
    assert.match(none.json.errors[0].message, /ref=REF/);
    const bad = await read(what, { ref: PUBLIC, layer: 'x' });
    assert.equal(bad.status, 400, JSON.stringify(bad.json));
    const post = await fetch(`${EDGE}/${what}?ref=${encodeURIComponent(PUBLIC)}`, { method: 'POST' });
    assert.equal(post.status, 405);
  }
  const missing = await read('ls', { ref: `${PLAIN}/peek/none-${run}:v1` });
  assert.equal(missing.status, 404, JSON.stringify(missing.json));
});
