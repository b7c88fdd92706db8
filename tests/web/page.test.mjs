// The browser page's behaviour around the upload, in headless Chromium (web/dist served by the
// tests' plain static server, which has no /proxy/): how errors are classified and which registry
// they name, "Show the base's layers" with only a base, a new run clearing the last one's
// leftovers, Cancel and the warning on leaving, short names (r8.im), a registry without CORS,
// a nested folder in the default layout, and a model folder packed as a ModelPack (the same
// artifact as `lamina pack`, which these tests run: target/debug/lamina or LAMINA_BIN), also
// over a throttled link, its files uploading 4 at a time.
//   (web/build.sh; tests/harness/registry.sh start; tests/harness/fixtures.sh) then
//   cd tests/web && npm test
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import fs from 'node:fs';
import path from 'node:path';
import os from 'node:os';
import { serve, sh, sha256, gen, REG, checkPushed, launchChromium, dropGenerated, waitResult, artifacts, modelFolder, checkModelPack, dropFolder, startThrottle, overlap, writeGenerated, dropGeneratedFolder, SLOW_MODEL, checkPackOf } from './common.mjs';

const run = `${process.pid}`;
const BASE = `${REG}/fixtures/base:latest`;
const BASIC = '127.0.0.1:5101'; // Basic auth, no CORS headers (tests/harness/registry.sh)
// A port with "401" in it: a 404 from there is not an authentication failure.
const FRONT_PORT = 5401;
const FRONT = `127.0.0.1:${FRONT_PORT}`;
const CORS = {
  'access-control-allow-origin': '*',
  'access-control-allow-methods': 'GET, HEAD, POST, PUT, PATCH, DELETE',
  'access-control-allow-headers': 'authorization, content-type, content-range, accept',
  'access-control-expose-headers': 'docker-content-digest, location, range, www-authenticate, oci-chunk-min-length',
};

let server, base, ctx, front;

// The Basic-auth registry on FRONT_PORT with CORS headers added (as a registry configured for
// browsers would send them).
function startFront() {
  front = http.createServer((req, res) => {
    if (req.method === 'OPTIONS') { res.writeHead(204, CORS); res.end(); return; }
    const up = http.request({ host: '127.0.0.1', port: 5101, method: req.method, path: req.url, headers: req.headers }, (r) => {
      res.writeHead(r.statusCode, { ...r.headers, ...CORS });
      r.pipe(res);
    });
    up.on('error', () => { res.writeHead(502, CORS); res.end(); });
    req.pipe(up);
  });
  return new Promise((resolve, reject) => { front.on('error', reject); front.listen(FRONT_PORT, '127.0.0.1', resolve); });
}

before(async () => {
  ({ server, url: base } = await serve());
  await startFront();
  ctx = await launchChromium();
});

after(async () => {
  await ctx?.close();
  server?.close();
  front?.close();
});

async function openPage() {
  const page = await ctx.newPage();
  page.on('console', (m) => { if (m.type() === 'error') console.log('page:', m.text()); });
  await page.goto(base);
  return page;
}

// Waits for the result line to show an error; gives its text.
async function errorOf(page) {
  await page.waitForSelector('#result.error', { timeout: 60000 });
  return page.textContent('#result');
}

test('errors: classified by the HTTP status, naming the registry that failed, in the page\'s words', async () => {
  const page = await openPage();
  // a 404 from a registry on port 5401 is "not found", not an authentication failure
  await page.fill('#base', `${FRONT}/fixtures/missing-${run}:latest`);
  await page.fill('#dest', `${FRONT}/e2e/web-missing-${run}:v1`);
  await page.fill('#username', 'testuser');
  await page.fill('#password', 'testpass');
  await page.click('#show');
  let err = await errorOf(page);
  assert.match(err, /^The image was not found in the registry 127\.0\.0\.1:5401 \(HTTP 404\): /, err);
  assert.doesNotMatch(err, /Authentication/, err);

  // the base is fine (5100), the destination asks for credentials that were not given: the
  // error names the destination's registry, and says what to fill in on the page
  await page.fill('#base', BASE);
  await page.fill('#username', '');
  await page.fill('#password', '');
  await dropGenerated(page, [['config.json', 0, 0, '{}\n']]);
  await page.waitForFunction(() => document.querySelectorAll('#filelist li').length === 1);
  await page.click('#go');
  err = await errorOf(page);
  assert.match(err, /^Authentication failed with the destination's registry 127\.0\.0\.1:5401: /, err);
  assert.match(err, /Fill in the username and password \(or a token alone\) under "Credentials for the destination"/, err);
  assert.doesNotMatch(err, /5100|--username|--password|docker login/, err);

  // wrong credentials: the page says to check them
  await page.fill('#username', 'testuser');
  await page.fill('#password', 'wrong');
  await page.click('#go');
  err = await errorOf(page);
  assert.match(err, /^Authentication failed with the destination's registry 127\.0\.0\.1:5401: .*Check the username and the password or token/, err);
  await page.close();
});

test('"Show the base\'s layers" works with only a base', async () => {
  const page = await openPage();
  await page.fill('#base', BASE);
  await page.click('#show');
  await page.waitForSelector('#baseinfo:not([hidden]) tbody tr');
  assert.equal(await page.locator('#baseinfo tbody tr').count(), 2);
  assert.equal(await page.textContent('#result'), '');
  await page.close();
});

test('a new run clears the last one\'s phase line, error, table and bars', async () => {
  const page = await openPage();
  await page.fill('#base', BASE);
  await page.click('#show');
  await page.waitForSelector('#baseinfo:not([hidden]) tbody tr');
  // a failing Show: the old table goes
  await page.fill('#base', `${REG}/fixtures/missing-${run}:latest`);
  await page.click('#show');
  let err = await errorOf(page);
  assert.match(err, /not found/);
  assert.equal(await page.locator('#baseinfo').isHidden(), true);
  assert.equal(await page.locator('#baseinfo tbody tr').count(), 0);
  // a good one: the old error goes
  await page.fill('#base', BASE);
  await page.click('#show');
  await page.waitForSelector('#baseinfo:not([hidden]) tbody tr');
  assert.equal(await page.textContent('#result'), '');
  assert.equal(await page.getAttribute('#result', 'class'), '');
  // a push: the table goes, the phase line ends with "Done"
  await page.fill('#dest', `${REG}/e2e/web-clear-${run}:v1`);
  await dropGenerated(page, [['a.bin', 1, 3]]);
  await page.waitForFunction(() => document.querySelectorAll('#filelist li').length === 1);
  await page.click('#go');
  const { result } = await waitResult(page);
  assert.match(result, /@sha256:/);
  assert.equal(await page.locator('#baseinfo').isHidden(), true);
  assert.match(await page.textContent('#phase'), /^Done in/);
  // a failing push: no "Done" phase, no old digest, the bars start again
  await page.fill('#dest', `${FRONT}/e2e/web-clear-${run}:v1`);
  await page.click('#go');
  err = await errorOf(page);
  assert.match(err, /^Authentication failed/);
  assert.equal(await page.textContent('#phase'), 'Stopped: see the error below.');
  assert.deepEqual(await page.$$eval('#filelist progress', (ps) => ps.map((p) => p.value)), [0]);
  assert.equal(await page.$eval('#totalbar', (b) => b.style.width), '0%');
  // a Show after it: no error, no progress section of the push, nothing of its log (only the
  // notes of reading the base's files: its gzip layers are streamed)
  await page.click('#show');
  await page.waitForSelector('#baseinfo:not([hidden]) tbody tr');
  await page.waitForFunction(() => /^\d+ entries\./.test(document.querySelector('#treestat').textContent));
  assert.equal(await page.textContent('#result'), '');
  assert.equal(await page.locator('#progress').isHidden(), true);
  const lines = (await page.textContent('#log')).split('\n').filter(Boolean);
  assert.deepEqual(lines.filter((l) => !/^note: layer \d is gzip-compressed: it is read whole as a stream/.test(l)), []);
  await page.close();
});

// A TCP relay to the plain registry that forwards the first `stallAfter` bytes towards it and
// then swallows the rest: the upload hangs mid-chunk. Records the connections it swallowed for,
// and when each of them closed.
function stallingRelay(stallAfter) {
  let up = 0;
  const stalled = new Map(); // socket -> closed?
  const srv = net.createServer((c) => {
    const r = net.connect(5100, '127.0.0.1');
    c.on('data', (d) => {
      if (up + d.length <= stallAfter) { up += d.length; r.write(d); return; }
      up = stallAfter + 1;
      if (!stalled.has(c)) stalled.set(c, false);
    });
    r.on('data', (d) => c.write(d));
    const end = () => { if (stalled.has(c)) stalled.set(c, true); c.destroy(); r.destroy(); };
    c.on('close', end); c.on('error', end); r.on('error', end);
  });
  return new Promise((res) => srv.listen(0, '127.0.0.1', () => res({
    srv, port: srv.address().port,
    stalled: () => stalled.size, open: () => [...stalled.values()].filter((closed) => !closed).length,
  })));
}

// A page whose upload hangs mid-chunk in a stallingRelay; resolves once the chunk is on its way.
async function stalledUpload(name) {
  const relay = await stallingRelay(2 << 20);
  const page = await openPage();
  const host = `127.0.0.1:${relay.port}`;
  assert.equal(await page.locator('#cancel').isHidden(), true, 'no Cancel without a job');
  await page.fill('#base', `${host}/fixtures/base:latest`);
  await page.fill('#dest', `${host}/e2e/${name}:v1`);
  await dropGenerated(page, [['model.bin', 100, 17]]);
  await page.waitForFunction(() => document.querySelectorAll('#filelist li').length === 1);
  await page.click('#go');
  for (let i = 0; relay.stalled() === 0; i++) {
    assert.ok(i < 600, 'the upload reached the relay');
    await new Promise((r) => setTimeout(r, 50));
  }
  return { page, relay };
}

test('leaving the page while an upload runs asks first', async () => {
  const { page, relay } = await stalledUpload(`web-leave-${run}`);
  const dialog = page.waitForEvent('dialog');
  const closed = page.waitForEvent('close');
  await page.close({ runBeforeUnload: true });
  const d = await dialog;
  assert.equal(d.type(), 'beforeunload');
  // (a dismissed dialog leaves Playwright unable to close the page: this one is accepted)
  await d.accept();
  await closed;
  relay.srv.close();
});

test('Cancel stops an upload in progress; then leaving the page does not ask', async () => {
  const { page, relay } = await stalledUpload(`web-cancel-${run}`);
  assert.equal(await page.locator('#cancel').isVisible(), true);
  assert.equal(await page.locator('#filelist button.remove').isDisabled(), true, 'files stay while they upload');
  await page.click('#cancel');
  await page.waitForFunction(() => /Cancelled/.test(document.querySelector('#result').textContent), null, { timeout: 10000 });
  assert.match(await page.textContent('#result'), /^Cancelled: /);
  assert.equal(await page.textContent('#phase'), 'Cancelled.');
  assert.equal(await page.locator('#cancel').isHidden(), true);
  assert.equal(await page.locator('#go').isEnabled(), true);
  assert.equal(await page.locator('#filelist button.remove').isEnabled(), true);
  // the request in flight was aborted: the browser closed its connection
  for (let i = 0; relay.open() > 0; i++) {
    assert.ok(i < 100, 'the browser closed the stalled connection after Cancel');
    await new Promise((r) => setTimeout(r, 50));
  }
  relay.srv.close();
  // nothing was tagged
  assert.throws(() => sh('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${REG}/e2e/web-cancel-${run}:v1`]), 'no tag after Cancel');
  // the page takes the next job (a fresh worker)
  await page.fill('#base', BASE);
  await page.click('#show');
  await page.waitForSelector('#baseinfo:not([hidden]) tbody tr');
  // and with no upload running (the base's files may still be read), the page closes without asking
  let asked = false;
  page.on('dialog', (d) => { asked = true; d.dismiss(); });
  const closed = page.waitForEvent('close');
  await page.close({ runBeforeUnload: true });
  await closed;
  assert.equal(asked, false);
});

test('a short name goes to r8.im: said at once, and an unreachable r8.im fails fast', async () => {
  const page = await openPage();
  // r8.im unreachable (as offline here; made certain for machines that are online)
  const sent = [];
  await page.route(/^https:\/\/r8\.im\//, async (route) => {
    sent.push({ url: route.request().url(), log: await page.textContent('#log') });
    await route.abort('internetdisconnected');
  });
  await page.fill('#base', 'me/base');
  await page.fill('#dest', 'me/model:v1');
  await dropGenerated(page, [['a.txt', 0, 0, 'a\n']]);
  await page.waitForFunction(() => document.querySelectorAll('#filelist li').length === 1);
  const t0 = Date.now();
  await page.click('#go');
  const err = await errorOf(page);
  const secs = (Date.now() - t0) / 1000;
  assert.ok(secs < 3, `failed fast (${secs} s)`);
  assert.match(err, /^The base's registry r8\.im \(where the short name me\/base goes\) could not be reached from this page/, err);
  assert.match(err, /write the registry's host in front of the name/, err);
  const log = await page.textContent('#log');
  assert.match(log, /^me\/base has no registry host: it goes to r8\.im, as with the CLI/, log);
  assert.doesNotMatch(log, /retrying/, log);
  // before the first request to r8.im the page had said where the name goes; only /v2/ was tried
  assert.ok(sent.length > 0);
  assert.match(sent[0].log, /me\/base has no registry host: it goes to r8\.im/);
  assert.deepEqual([...new Set(sent.map((s) => s.url))], ['https://r8.im/v2/']);
  await page.close();
});

test('a registry without CORS, the page on a plain static server: the page says so and how to fix it', async () => {
  const page = await openPage();
  const proxied = [];
  page.on('request', (r) => { if (r.url().includes('/proxy/')) proxied.push(r.url()); });
  await page.fill('#base', BASE);
  await page.fill('#dest', `${BASIC}/e2e/web-nocors-${run}:v1`);
  await page.fill('#username', 'testuser');
  await page.fill('#password', 'testpass');
  await dropGenerated(page, [['a.txt', 0, 0, 'a\n']]);
  await page.waitForFunction(() => document.querySelectorAll('#filelist li').length === 1);
  await page.click('#go');
  const err = await errorOf(page);
  assert.match(err, /^The destination's registry 127\.0\.0\.1:5101 allows no cross-origin requests \(it sends no CORS headers\)/, err);
  assert.match(err, /no proxy/, err);
  assert.match(err, /Serve the page from lamina's edge Worker/, err);
  assert.match(err, /enable CORS on the registry/, err);
  assert.doesNotMatch(err, /5100|GET http/, err);
  // only the check of the proxy went to /proxy/: no job was started through it
  assert.deepEqual(proxied, [`${base}proxy/http://${BASIC}/v2/`]);
  await page.close();
});

test('a nested folder in the default layout keeps every path; a removed file is left out', async () => {
  const src = fs.mkdtempSync(path.join(os.tmpdir(), 'lamina-nested-'));
  const model = path.join(src, 'model');
  const files = {
    'sub/deeper/notes.txt': 'deep notes\n',
    'unet/config.json': '{"unet": true}\n',
    'vae/config.json': '{"vae": 1}\n',
  };
  for (const [p, text] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(model, p)), { recursive: true });
    fs.writeFileSync(path.join(model, p), text);
  }
  fs.writeFileSync(path.join(model, 'weights.bin'), gen(2, 31));
  const page = await openPage();
  const dest = `${REG}/e2e/web-nested-${run}:v1`;
  await page.fill('#base', BASE);
  await page.fill('#dest', dest);
  await page.setInputFiles('#folder', model);
  await dropGenerated(page, [['unwanted.txt', 0, 0, 'no\n']]);
  await page.waitForFunction(() => document.querySelectorAll('#filelist li').length === 5);
  await page.click('button[aria-label="Remove unwanted.txt"]');
  await page.waitForFunction(() => document.querySelectorAll('#filelist li').length === 4);
  const names = await page.$$eval('#filelist li span:first-child', (s) => s.map((x) => x.textContent.replace(/ \(.*/, '')).sort());
  assert.deepEqual(names, ['model/sub/deeper/notes.txt', 'model/unet/config.json', 'model/vae/config.json', 'model/weights.bin']);
  await page.click('#go');
  const { result, log } = await waitResult(page);
  assert.match(result, /@sha256:[0-9a-f]{64}$/, `${result}\n${log}`);
  checkPushed(dest, result, BASE, (m, b, rootfs) => {
    assert.equal(m.layers.length, b.layers.length + 1, 'one layer for all the files');
    const w = path.join(rootfs, 'src/weights');
    for (const [p, text] of Object.entries(files)) {
      assert.equal(fs.readFileSync(path.join(w, 'model', p), 'utf8'), text, p);
    }
    assert.equal(sha256(fs.readFileSync(path.join(w, 'model/weights.bin'))), sha256(gen(2, 31)));
    // nothing flattened, nothing else added
    const all = sh('find', [w, '-type', 'f', '-printf', '%P\n']).trim().split('\n').sort();
    assert.deepEqual(all, ['model/sub/deeper/notes.txt', 'model/unet/config.json', 'model/vae/config.json', 'model/weights.bin']);
  });
  fs.rmSync(src, { recursive: true, force: true });
  await page.close();
});

test('ModelPack: a model folder packed from the page is the artifact lamina pack makes of it', async () => {
  const src = fs.mkdtempSync(path.join(os.tmpdir(), 'lamina-modelpack-'));
  const m = modelFolder(src);
  const epoch = 1700000000;
  const page = await openPage();
  const dest = `${REG}/e2e/web-modelpack-${run}:v1`;
  await page.check('input[name=layout][value=modelpack]');
  // no base image: its field, the Show button, the card and the compression go
  for (const id of ['#base', '#show', '#card', '#compression']) assert.equal(await page.locator(id).isHidden(), true, id);
  assert.equal(await page.textContent('#go'), 'Pack the files and push');
  await page.fill('#dest', dest);
  await page.fill('#epoch', `${epoch}`);
  await page.setInputFiles('#folder', m.dir);
  const count = Object.keys(m.files).length + m.leftOut.length;
  await page.waitForFunction((n) => document.querySelectorAll('#filelist li').length === n, count);
  await page.click('#go');
  const { result, log } = await waitResult(page);
  assert.match(result, /^127\.0\.0\.1:5100\/e2e\/web-modelpack-\d+@sha256:[0-9a-f]{64}$/, `${result}\n${log}`);
  assert.match(log, /^left out \(hidden files and caches, as modctl and lamina pack leave them\): tiny\/(\.gitattributes|__pycache__)/m, log);
  assert.match(log, /^weight unet\/x\.safetensors \(\d+ bytes\): sha256:/m, log);
  assert.match(await page.textContent('#phase'), /^Done in/);
  // every packed file's bar is full; the left-out ones say so
  const rows = await page.$$eval('#filelist li', (ls) => ls.map((l) => [
    l.querySelector('span').textContent.replace(/ \(.*/, ''), l.querySelector('progress').value === l.querySelector('progress').max,
    l.querySelector('.small').textContent]));
  assert.deepEqual(rows.sort(), [...Object.keys(m.files).map((p) => [`tiny/${p}`, true, 'done']),
    ...m.leftOut.map((p) => [`tiny/${p}`, false, 'left out (hidden or a cache)'])].sort());
  await page.screenshot({ path: path.join(artifacts, 'modelpack-chromium.png'), fullPage: true });
  checkModelPack(dest, result, m, epoch);
  // the same folder dropped instead of picked, with 0 for its time (the CLI's default without
  // SOURCE_DATE_EPOCH)
  await page.evaluate(() => { for (const b of document.querySelectorAll('#filelist button.remove')) b.click(); });
  await page.waitForFunction(() => document.querySelectorAll('#filelist li').length === 0);
  await dropFolder(page, m.dir);
  await page.waitForFunction((n) => document.querySelectorAll('#filelist li').length === n, count);
  await page.fill('#epoch', '');
  await page.click('#go');
  const again = await waitResult(page);
  checkModelPack(dest, again.result, m, 0);
  assert.notEqual(again.result, result);
  fs.rmSync(src, { recursive: true, force: true });
  await page.close();
});

test('ModelPack: nothing dropped, only hidden files, a bad time or a digest as the destination say what to do, and tag nothing', async () => {
  const page = await openPage();
  const dest = `${REG}/e2e/web-modelpack-empty-${run}:v1`;
  await page.check('input[name=layout][value=modelpack]');
  await page.fill('#dest', dest);
  // (no base: the form sends without one)
  await page.click('#go');
  let err = await errorOf(page);
  assert.equal(err, 'nothing to pack: drop model files or a folder first');
  assert.equal(await page.textContent('#phase'), 'Stopped: see the error below.');
  await dropGenerated(page, [['.hidden', 0, 0, 'x\n'], ['.DS_Store', 0, 0, 'y']]);
  await page.waitForFunction(() => document.querySelectorAll('#filelist li').length === 2);
  await page.click('#go');
  err = await errorOf(page);
  assert.match(err, /^nothing to pack: every file was left out \(hidden files and caches are, as modctl leaves them\)$/, err);
  await page.click('button[aria-label="Remove .hidden"]');
  await page.click('button[aria-label="Remove .DS_Store"]');
  await dropGenerated(page, [['README.md', 0, 0, '# r\n']]);
  await page.fill('#epoch', 'yesterday');
  await page.click('#go');
  err = await errorOf(page);
  assert.match(err, /^The files' time "yesterday" is not a number of seconds since 1970/, err);
  await page.fill('#epoch', '');
  await page.fill('#dest', `${REG}/e2e/web-modelpack-empty-${run}@sha256:${'0'.repeat(64)}`);
  await page.click('#go');
  err = await errorOf(page);
  assert.match(err, /^the destination names a digest: give a tag/, err);
  assert.throws(() => sh('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${dest}`]), 'no tag');
  await page.close();
});

test('ModelPack over a slow link: the files upload 4 at a time, each in its own session, found ones are not sent, the same artifact as lamina pack at any -j; a refused one stops them all', async () => {
  const RATE = 4 << 20; // each upload's body read at 4 MiB/s
  const proxy = await startThrottle(RATE);
  const src = fs.mkdtempSync(path.join(os.tmpdir(), 'lamina-slow-'));
  const { dir, bytes } = writeGenerated(src, 'slow', SLOW_MODEL);
  const n = Object.keys(SLOW_MODEL).length;
  const epoch = 1700000100;
  const repo = `e2e/web-slow-${run}`;
  const page = await openPage();
  await page.check('input[name=layout][value=modelpack]');
  assert.equal(await page.inputValue('#jobs'), '4', 'lamina pack -j\'s default');
  await page.fill('#epoch', `${epoch}`);
  const drop = async () => {
    await page.evaluate(() => { for (const b of document.querySelectorAll('#filelist button.remove')) b.click(); });
    await dropGeneratedFolder(page, 'slow', SLOW_MODEL);
    await page.waitForFunction((k) => document.querySelectorAll('#filelist li').length === k, n);
  };
  const go = async (dest) => {
    await page.fill('#dest', dest);
    const since = Date.now();
    await page.click('#go');
    const r = await waitResult(page);
    assert.match(r.result, /@sha256:[0-9a-f]{64}$/, `${r.result}\n${r.log}`);
    return { ...r, ms: Date.now() - since, since };
  };
  const bodies = (since) => proxy.log.filter((r) => r.start >= since);
  try {
    // 4 at a time: the uploads overlap, never more than 4, each in its own upload session
    await drop();
    const par = await go(`${proxy.host}/${repo}:v1`);
    const o = overlap(proxy.log, par.since);
    // 5 files streamed (PATCH), the 2 small ones and the config in one PUT each
    const sent = bodies(par.since);
    assert.equal(sent.filter((r) => r.method === 'PATCH').length, 5, JSON.stringify(sent));
    assert.equal(sent.filter((r) => r.method === 'PUT').length, 3, JSON.stringify(sent));
    assert.equal(new Set(sent.map((r) => r.path)).size, sent.length, 'each upload its own session');
    assert.equal(o.most, 4, `4 uploads at once, no more: ${JSON.stringify(o)}`);
    assert.ok(o.span < 0.6 * o.sum, `the uploads overlap: ${JSON.stringify(o)}`);
    assert.match(await page.textContent('#filestat'), /^The files: 32\.0 MiB of 32\.0 MiB read and hashed/);
    const rows = await page.$$eval('#filelist li', (ls) => ls.map((l) => [l.querySelector('progress').value === l.querySelector('progress').max, l.querySelector('.small').textContent]));
    assert.deepEqual(rows, Array(n).fill([true, 'done']), 'every bar full');
    await page.screenshot({ path: path.join(artifacts, 'modelpack-slow-chromium.png'), fullPage: true });
    const m = checkPackOf(`${REG}/${repo}:v1`, par.result, dir, bytes, epoch);
    const blob = (p) => m.layers.find((l) => l.annotations['org.cncf.model.filepath'] === p).digest;
    assert.equal(blob('copy/model-00001-of-00004.bin'), blob('model-00001-of-00004.bin'), 'the copy is the same blob');

    // again to another tag: every file is found in the destination (the small ones by their
    // digests, the large ones by what this page sent), nothing but the config is sent
    const again = await go(`${proxy.host}/${repo}:v2`);
    assert.equal(again.result.split('@')[1], par.result.split('@')[1], 'the same artifact');
    const resent = bodies(again.since);
    assert.deepEqual(resent.map((r) => r.method), ['PUT'], `only the config: ${JSON.stringify(resent)}`);
    assert.equal((again.log.match(/\(in the destination already: not sent\)$/mg) || []).length, n, again.log);
    const stats = await page.$$eval('#filelist li .small', (ss) => ss.map((x) => x.textContent));
    assert.deepEqual(stats, Array(n).fill('done (in the destination already)'));

    // one at a time, the files dropped again (new File objects: nothing remembered), into a
    // new repository: the same artifact, no two uploads at once, and much slower
    await drop();
    await page.fill('#jobs', '1');
    const ser = await go(`${proxy.host}/${repo}-serial:v1`);
    assert.equal(ser.result.split('@')[1], par.result.split('@')[1], 'the same artifact one at a time');
    const os1 = overlap(proxy.log, ser.since);
    assert.equal(os1.most, 1, JSON.stringify(os1));
    assert.equal(bodies(ser.since).length, 8, 'everything sent again');
    console.log(`7 files (32 MiB), each upload read at ${RATE >> 20} MiB/s: 4 at a time ${par.ms} ms ` +
      `(bodies ${o.sum} ms in all over ${o.span} ms), one at a time ${ser.ms} ms (${os1.sum} ms over ${os1.span} ms); ` +
      `again with every file in the destination ${again.ms} ms`);
    assert.ok(par.ms < 0.6 * ser.ms, `4 at a time (${par.ms} ms) is much faster than one (${ser.ms} ms)`);
    // one upload refused (the third PATCH) ends the job with its error, the others dropped,
    // and tags nothing
    await drop();
    await page.fill('#jobs', '4');
    proxy.refuse = 3;
    await page.fill('#dest', `${proxy.host}/${repo}-refused:v1`);
    const since = Date.now();
    await page.click('#go');
    const refused = await errorOf(page);
    assert.match(refused, /^Access denied by the destination's registry 127\.0\.0\.1:\d+ \(HTTP 403\): .*requested access to the resource is denied/, refused);
    // the uploads still going stop with the job (their bodies end short, once the proxy has
    // read what the sockets held)
    for (let i = 0; i < 100 && proxy.inflight > 0; i++) await new Promise((r) => setTimeout(r, 50));
    const stopped = proxy.aborted.filter((r) => r.start >= since && r.method === 'PATCH');
    assert.ok(stopped.length >= 1, `the other uploads were stopped: ${JSON.stringify(proxy.aborted)} ${JSON.stringify(proxy.log.filter((r) => r.start >= since))}`);
    assert.throws(() => sh('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${REG}/${repo}-refused:v1`]), 'no tag');
    // a bad number of uploads says so
    await page.fill('#jobs', '9');
    await page.click('#go');
    assert.match(await errorOf(page), /^Files uploaded at once: "9" is not a whole number from 1 to 6/);
  } finally {
    proxy.close();
    fs.rmSync(src, { recursive: true, force: true });
    await page.close();
  }
});
