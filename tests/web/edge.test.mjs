// The edge Worker in the real runtime: `wrangler dev --local` (workerd) serving web/dist and the
// registry proxy on 127.0.0.1, in front of the local registries. The browser test drives the page
// the Worker serves against the Basic-auth registry (:5101), which sends no CORS headers, so the
// page must go through the proxy.
//   (web/build.sh; edge/build.sh; registries and fixtures running) then cd tests/web && npm test
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { sha256, gen, artifacts, checkPushed, launchChromium, dropGenerated, waitResult, startWrangler, stop } from './common.mjs';

const PORT = 8797;
const EDGE = `http://127.0.0.1:${PORT}`;
const BASIC = '127.0.0.1:5101';
const CREDS = 'testuser:testpass';
let dev, fake, storage, ctx;
const storageAuth = [];

// A registry stand-in that redirects blob GETs to object storage on another host (distribution
// with filesystem storage never redirects), and the "storage" that records what it was sent.
function startFakes() {
  storage = http.createServer((req, res) => {
    storageAuth.push(req.headers.authorization || null);
    res.writeHead(200, { 'content-type': 'application/octet-stream' });
    res.end('blob bytes from storage');
  });
  fake = http.createServer((req, res) => {
    res.writeHead(307, { location: `http://localhost:${storage.address().port}/bucket/blob?signature=x` });
    res.end();
  });
  return Promise.all([
    new Promise((r) => storage.listen(0, '127.0.0.1', r)),
    new Promise((r) => fake.listen(0, '127.0.0.1', r)),
  ]);
}

before(async () => {
  await startFakes();
  const allowed = ['127.0.0.1:5100', BASIC, '127.0.0.1:5103', '127.0.0.1:5104', `127.0.0.1:${fake.address().port}`].join(',');
  dev = await startWrangler(PORT, { ALLOWED_REGISTRIES: allowed, ALLOWED_ORIGINS: 'http://allowed.example' });
});

after(async () => {
  await ctx?.close();
  stop(dev);
  fake?.close();
  storage?.close();
});

test('the proxy refuses registries not on the allow list, and bad paths', async () => {
  let r = await fetch(`${EDGE}/proxy/http://127.0.0.1:5102/v2/`);
  assert.equal(r.status, 403);
  assert.match(await r.text(), /127\.0\.0\.1:5102 is not on this proxy's allow list/);
  r = await fetch(`${EDGE}/proxy/https://registry-1.docker.io/v2/`);
  assert.equal(r.status, 403);
  r = await fetch(`${EDGE}/proxy/ftp://127.0.0.1:5100/v2/`);
  assert.equal(r.status, 400);
});

test('CORS headers only for allowed origins', async () => {
  const pre = (origin) => fetch(`${EDGE}/proxy/http://${BASIC}/v2/`, {
    method: 'OPTIONS', headers: { origin, 'access-control-request-method': 'PATCH' },
  });
  let r = await pre('http://allowed.example');
  assert.equal(r.status, 204);
  assert.equal(r.headers.get('access-control-allow-origin'), 'http://allowed.example');
  assert.match(r.headers.get('access-control-allow-headers'), /content-range/);
  r = await pre(EDGE);
  assert.equal(r.headers.get('access-control-allow-origin'), EDGE, 'the Worker\'s own origin');
  r = await pre('http://evil.example');
  assert.equal(r.status, 403);
  assert.equal(r.headers.get('access-control-allow-origin'), null);
  // a real request from a foreign origin is refused before it reaches the registry
  r = await fetch(`${EDGE}/proxy/http://${BASIC}/v2/`, { headers: { origin: 'http://evil.example' } });
  assert.equal(r.status, 403);
  r = await fetch(`${EDGE}/proxy/http://${BASIC}/v2/`, { headers: { origin: 'http://allowed.example' } });
  assert.equal(r.status, 401, 'the registry\'s own answer');
  assert.equal(r.headers.get('access-control-allow-origin'), 'http://allowed.example');
  assert.match(r.headers.get('access-control-expose-headers'), /WWW-Authenticate/);
});

test('upload Locations are rewritten through the proxy', async () => {
  const auth = `Basic ${Buffer.from(CREDS).toString('base64')}`;
  const r = await fetch(`${EDGE}/proxy/http://${BASIC}/v2/e2e/edge-loc/blobs/uploads/`, { method: 'POST', headers: { authorization: auth } });
  assert.equal(r.status, 202);
  const loc = r.headers.get('location');
  assert.ok(loc.startsWith(`${EDGE}/proxy/http://${BASIC}/v2/e2e/edge-loc/blobs/uploads/`), loc);
  // and the rewritten Location works: the session's status through the proxy
  const st = await fetch(loc, { headers: { authorization: auth } });
  assert.equal(st.status, 204);
  assert.equal(st.headers.get('range'), '0-0');
});

test('a blob redirect to another host is followed without the browser\'s Authorization', async () => {
  const r = await fetch(`${EDGE}/proxy/http://127.0.0.1:${fake.address().port}/v2/x/blobs/sha256:${'a'.repeat(64)}`, {
    headers: { authorization: 'Bearer secret-for-the-registry-only' },
  });
  assert.equal(r.status, 200);
  assert.equal(await r.text(), 'blob bytes from storage');
  assert.deepEqual(storageAuth, [null], 'storage never saw the registry credentials');
});

test('the page served by the Worker pushes to a registry without CORS through the proxy', async () => {
  ctx = await launchChromium();
  const page = await ctx.newPage();
  await page.goto(`${EDGE}/`);
  const dest = `${BASIC}/e2e/web-edge-${process.pid}:v1`;
  await page.fill('#base', `${BASIC}/fixtures/base:latest`);
  await page.fill('#dest', dest);
  const [user, pass] = CREDS.split(':');
  await page.fill('#username', user);
  await page.fill('#password', pass);
  await dropGenerated(page, [['model.bin', 150, 9]]);
  await page.waitForFunction(() => document.querySelectorAll('#filelist li').length === 1);
  await page.click('#go');
  const { result, log } = await waitResult(page);
  assert.match(result, /@sha256:[0-9a-f]{64}$/, `${result}\n${log}`);
  assert.match(log, /no CORS\): using the proxy/, log);
  await page.screenshot({ path: path.join(artifacts, 'finished-edge.png'), fullPage: true });
  checkPushed(dest, result, `${BASIC}/fixtures/base:latest`, (m, b, rootfs) => {
    assert.equal(m.layers.length, b.layers.length + 1);
    assert.equal(sha256(fs.readFileSync(path.join(rootfs, 'src/weights/model.bin'))), sha256(gen(150, 9)));
  }, CREDS);
  // the chunks went through the Worker: the registry saw 150 MiB in 64 MiB PATCHes
  const patches = fs.readFileSync('/tmp/lamina-test/run/basic.log', 'utf8').split('\n')
    .filter((l) => l.includes(`PATCH /v2/e2e/web-edge-${process.pid}/blobs/uploads/`));
  assert.equal(patches.length, 3, patches.join('\n'));
});

test('the page pushes through the proxy to the token-auth registry (token server proxied too)', async () => {
  ctx ??= await launchChromium();
  const page = await ctx.newPage();
  await page.goto(`${EDGE}/`);
  const TOKEN = '127.0.0.1:5103';
  const dest = `${TOKEN}/e2e/web-edge-token-${process.pid}:v1`;
  await page.fill('#base', `${TOKEN}/fixtures/base:latest`);
  await page.fill('#dest', dest);
  const [user, pass] = CREDS.split(':');
  await page.fill('#username', user);
  await page.fill('#password', pass);
  await dropGenerated(page, [['adapter.bin', 70, 12]]);
  await page.waitForFunction(() => document.querySelectorAll('#filelist li').length === 1);
  await page.click('#go');
  const { result, log } = await waitResult(page);
  assert.match(result, /@sha256:[0-9a-f]{64}$/, `${result}\n${log}`);
  checkPushed(dest, result, `${TOKEN}/fixtures/base:latest`, (m, b, rootfs) => {
    assert.equal(m.layers.length, b.layers.length + 1);
    assert.equal(sha256(fs.readFileSync(path.join(rootfs, 'src/weights/adapter.bin'))), sha256(gen(70, 12)));
  }, CREDS);
  // the token came from the token server through the Worker, and the chunks went through it
  const tokens = fs.readFileSync('/tmp/lamina-test/run/tokenserver.log', 'utf8');
  assert.match(tokens, new RegExp(`e2e/web-edge-token-${process.pid}`), 'a token for the destination was issued');
  const patches = fs.readFileSync('/tmp/lamina-test/run/token.log', 'utf8').split('\n')
    .filter((l) => l.includes(`PATCH /v2/e2e/web-edge-token-${process.pid}/blobs/uploads/`));
  assert.equal(patches.length, 2, patches.join('\n'));
});
