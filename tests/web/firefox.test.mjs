// The browser uploader in Firefox: Debian's firefox-esr driven over WebDriver BiDi by
// puppeteer-core (no browser download), the same page and registry as upload.test.mjs. Two files
// are dropped (one of 100 MiB, two 64 MiB chunks), the image is checked with skopeo and umoci;
// a model folder dropped on the page is packed as a ModelPack and compared with
// `lamina pack`'s (target/debug/lamina or LAMINA_BIN), also over a throttled link, its files
// uploading 4 at a time.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import os from 'node:os';
import puppeteer from 'puppeteer-core';
import { serve, sh, sha256, gen, GEN, REG, artifacts, checkPushed, lamina, modelFolder, checkModelPack, dropFolder, startThrottle, overlap, writeGenerated, dropGeneratedFolder, SLOW_MODEL, checkPackOf } from './common.mjs';

const FIREFOX = '/usr/bin/firefox-esr';
let server, base, browser;

before(async () => {
  ({ server, url: base } = await serve());
  browser = await puppeteer.launch({
    browser: 'firefox',
    executablePath: FIREFOX,
    headless: true,
    userDataDir: fs.mkdtempSync(path.join(os.tmpdir(), 'lamina-firefox-')),
  });
});

after(async () => {
  await browser?.close();
  server?.close();
});

test('Firefox: drop two files (one of 100 MiB), get the image, check it with skopeo and umoci', async () => {
  const page = await browser.newPage();
  const errors = [];
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  await page.goto(base);
  assert.match(await page.evaluate(() => navigator.userAgent), /Firefox\//);
  const dest = `${REG}/e2e/web-firefox-${process.pid}:v1`;
  await page.type('#base', `${REG}/fixtures/base:latest`);
  await page.type('#dest', dest);
  // a drop event with files made in the page, as a user's drag would bring them
  await page.evaluate((src) => {
    const g = eval(src);
    const dt = new DataTransfer();
    dt.items.add(new File([g(100, 5)], 'model.bin'));
    dt.items.add(new File(['{"layers": 2}\n'], 'config.json'));
    const drop = document.getElementById('drop');
    drop.dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
  }, GEN);
  await page.waitForFunction(() => document.querySelectorAll('#filelist li').length === 2);
  await page.click('#go');
  await page.waitForFunction(
    () => /@sha256:|error/i.test(document.querySelector('#result').textContent + document.querySelector('#result').className),
    { timeout: 300000, polling: 100 });
  const result = await page.$eval('#result', (e) => e.textContent);
  const log = await page.$eval('#log', (e) => e.textContent);
  assert.match(result, /^127\.0\.0\.1:5100\/e2e\/web-firefox-\d+@sha256:[0-9a-f]{64}$/, `${result}\n${log}\n${errors.join('\n')}`);
  const bars = await page.$$eval('#filelist progress', (ps) => ps.map((p) => [p.value, p.max]));
  assert.deepEqual(bars, [[100 << 20, 100 << 20], [14, 14]], 'each file\'s bar is full');
  await page.screenshot({ path: path.join(artifacts, 'finished-firefox.png'), fullPage: true });
  checkPushed(dest, result, `${REG}/fixtures/base:latest`, (m, b, rootfs) => {
    assert.equal(m.layers.length, b.layers.length + 1);
    const w = path.join(rootfs, 'src/weights');
    assert.equal(sha256(fs.readFileSync(path.join(w, 'model.bin'))), sha256(gen(100, 5)));
    assert.equal(fs.readFileSync(path.join(w, 'config.json'), 'utf8'), '{"layers": 2}\n');
  });
  await page.close();
});

test('Firefox: a model folder packed as a ModelPack is the artifact lamina pack makes of it', async () => {
  const src = fs.mkdtempSync(path.join(os.tmpdir(), 'lamina-modelpack-ff-'));
  const m = modelFolder(src);
  const epoch = 1712345678;
  const page = await browser.newPage();
  await page.goto(base);
  const dest = `${REG}/e2e/web-modelpack-firefox-${process.pid}:v1`;
  await page.click('input[name=layout][value=modelpack]');
  assert.equal(await page.$eval('#baserow', (e) => e.hidden), true, 'no base image');
  await page.type('#dest', dest);
  await page.type('#epoch', `${epoch}`);
  // (Firefox's WebDriver gives the folder input no folder: the folder is dropped)
  await dropFolder(page, m.dir);
  const count = Object.keys(m.files).length + m.leftOut.length;
  await page.waitForFunction((n) => document.querySelectorAll('#filelist li').length === n, {}, count);
  const names = await page.$$eval('#filelist li span:first-child', (s) => s.map((x) => x.textContent.replace(/ \(.*/, '')).sort());
  assert.deepEqual(names, [...Object.keys(m.files), ...m.leftOut].map((p) => `tiny/${p}`).sort(), 'the folder\'s files at their relative paths');
  await page.click('#go');
  await page.waitForFunction(
    () => /@sha256:|error/i.test(document.querySelector('#result').textContent + document.querySelector('#result').className),
    { timeout: 300000, polling: 100 });
  const result = await page.$eval('#result', (e) => e.textContent);
  const log = await page.$eval('#log', (e) => e.textContent);
  assert.match(result, /^127\.0\.0\.1:5100\/e2e\/web-modelpack-firefox-\d+@sha256:[0-9a-f]{64}$/, `${result}\n${log}`);
  await page.screenshot({ path: path.join(artifacts, 'modelpack-firefox.png'), fullPage: true });
  checkModelPack(dest, result, m, epoch);
  // nothing dropped: said, nothing tagged
  await page.evaluate(() => { for (const b of document.querySelectorAll('#filelist button.remove')) b.click(); });
  await page.waitForFunction(() => document.querySelectorAll('#filelist li').length === 0);
  await page.$eval('#dest', (e) => { e.value = ''; });
  await page.type('#dest', `${REG}/e2e/web-modelpack-firefox-empty-${process.pid}:v1`);
  await page.click('#go');
  await page.waitForSelector('#result.error', { timeout: 60000 });
  assert.equal(await page.$eval('#result', (e) => e.textContent), 'nothing to pack: drop model files or a folder first');
  fs.rmSync(src, { recursive: true, force: true });
  await page.close();
});

test('Firefox: over a slow link a ModelPack\'s files upload 4 at a time, each in its own session, the same artifact as lamina pack; a refused one stops them all', async () => {
  const proxy = await startThrottle(4 << 20);
  const src = fs.mkdtempSync(path.join(os.tmpdir(), 'lamina-slow-ff-'));
  const { dir, bytes } = writeGenerated(src, 'slow', SLOW_MODEL);
  const n = Object.keys(SLOW_MODEL).length;
  const epoch = 1712345000;
  const repo = `e2e/web-slow-firefox-${process.pid}`;
  const page = await browser.newPage();
  try {
    await page.goto(base);
    await page.click('input[name=layout][value=modelpack]');
    assert.equal(await page.$eval('#jobs', (e) => e.value), '4');
    await page.type('#dest', `${proxy.host}/${repo}:v1`);
    await page.type('#epoch', `${epoch}`);
    await dropGeneratedFolder(page, 'slow', SLOW_MODEL);
    await page.waitForFunction((k) => document.querySelectorAll('#filelist li').length === k, {}, n);
    const since = Date.now();
    await page.click('#go');
    await page.waitForFunction(
      () => /@sha256:|error/i.test(document.querySelector('#result').textContent + document.querySelector('#result').className),
      { timeout: 300000, polling: 100 });
    const ms = Date.now() - since;
    const result = await page.$eval('#result', (e) => e.textContent);
    const log = await page.$eval('#log', (e) => e.textContent);
    assert.match(result, /@sha256:[0-9a-f]{64}$/, `${result}\n${log}`);
    const sent = proxy.log.filter((r) => r.start >= since);
    assert.equal(sent.filter((r) => r.method === 'PATCH').length, 5, JSON.stringify(sent));
    assert.equal(new Set(sent.map((r) => r.path)).size, sent.length, 'each upload its own session');
    const o = overlap(proxy.log, since);
    assert.equal(o.most, 4, `4 uploads at once, no more: ${JSON.stringify(o)}`);
    assert.ok(o.span < 0.6 * o.sum, `the uploads overlap: ${JSON.stringify(o)}`);
    console.log(`Firefox, 7 files (32 MiB), each upload read at 4 MiB/s, 4 at a time: ${ms} ms (bodies ${o.sum} ms in all over ${o.span} ms)`);
    const bars = await page.$$eval('#filelist progress', (ps) => ps.map((p) => p.value === p.max));
    assert.deepEqual(bars, Array(n).fill(true), 'every bar full');
    await page.screenshot({ path: path.join(artifacts, 'modelpack-slow-firefox.png'), fullPage: true });
    checkPackOf(`${REG}/${repo}:v1`, result, dir, bytes, epoch);
    // the third upload refused: the job ends with its error, the uploads still going stop
    // with it (the worker aborts their requests), no tag
    await page.evaluate(() => { for (const b of document.querySelectorAll('#filelist button.remove')) b.click(); });
    await dropGeneratedFolder(page, 'slow', SLOW_MODEL);
    await page.waitForFunction((k) => document.querySelectorAll('#filelist li').length === k, {}, n);
    await page.$eval('#dest', (e) => { e.value = ''; });
    await page.type('#dest', `${proxy.host}/${repo}-refused:v1`);
    proxy.refuse = 3;
    const at = Date.now();
    await page.click('#go');
    await page.waitForSelector('#result.error', { timeout: 60000 });
    const err = await page.$eval('#result', (e) => e.textContent);
    assert.match(err, /^Access denied by the destination's registry 127\.0\.0\.1:\d+ \(HTTP 403\)/, err);
    for (let i = 0; i < 100 && proxy.inflight > 0; i++) await new Promise((r) => setTimeout(r, 50));
    const stopped = proxy.aborted.filter((r) => r.start >= at && r.method === 'PATCH');
    assert.ok(stopped.length >= 1, `the other uploads were stopped: ${JSON.stringify(proxy.log.filter((r) => r.start >= at))}`);
    assert.throws(() => sh('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${REG}/${repo}-refused:v1`]), 'no tag');
  } finally {
    proxy.close();
    fs.rmSync(src, { recursive: true, force: true });
    await page.close();
  }
});

test('Firefox: the base\'s files (range requests in Firefox) are what lamina ls lists; the preview of a dropped file is what it lists after the push', async () => {
  const page = await browser.newPage();
  await page.goto(base);
  const litter = fs.mkdtempSync(path.join(os.tmpdir(), 'lamina-firefox-tree-'));
  const m = modelFolder(litter);
  const car = `${REG}/e2e/ff-tree-car-${process.pid}:v1`;
  const dest = `${REG}/e2e/ff-tree-dest-${process.pid}:v1`;
  lamina(['pack', '-q', m.dir, '--format', 'modelcar', '--base', `${REG}/fixtures/base:latest`, '--dest', car], { SOURCE_DATE_EPOCH: '946684800' });
  const listed = (ref) => JSON.parse(lamina(['ls', '--json', ref])).entries;
  const byPath = (es) => [...es].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  // every directory opened (each makes its children when opened), the entries as ls --json has them
  const shown = async (sel) => {
    for (;;) {
      const closed = await page.$$eval(`${sel} details:not([open])`, (ds) => { for (const d of ds) d.open = true; return ds.length; });
      if (!closed) break;
      await page.waitForFunction((s) => [...document.querySelectorAll(`${s} details[open]`)].every((d) => d.children.length > 1), {}, sel);
    }
    return byPath(await page.$$eval(`${sel} li`, (lis) => lis.map((li) => {
      const d = li.dataset;
      return { path: d.path, type: d.type, size: Number(d.size), mode: d.mode, layer: d.layer === '' ? null : Number(d.layer), link: d.link || null };
    })));
  };
  await page.type('#base', car);
  await page.type('#dest', dest);
  await page.click('#show');
  await page.waitForFunction(() => /^\d+ entries\. Read:/.test(document.querySelector('#treestat').textContent) ||
    document.querySelector('#result').className === 'error', { timeout: 60000 });
  assert.equal(await page.$eval('#result', (e) => e.textContent), '', await page.$eval('#log', (e) => e.textContent));
  const read = JSON.parse(lamina(['ls', '--json', car])).read;
  const stat = await page.$eval('#treestat', (e) => e.textContent);
  assert.match(stat, new RegExp(`Read: ${read.rangeRequests} range requests`), stat);
  assert.deepEqual(await shown('#basetree'), byPath(listed(car)));
  // a file dropped: the preview, then the push
  await page.evaluate(() => {
    const dt = new DataTransfer();
    dt.items.add(new File(['{"extra": true}\n'], 'extra.json'));
    document.getElementById('drop').dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
  });
  await page.waitForSelector('#previewtree li.new[data-path="src/weights/extra.json"]');
  const preview = await shown('#previewtree');
  await page.click('#go');
  await page.waitForFunction(
    () => /@sha256:|error/i.test(document.querySelector('#result').textContent + document.querySelector('#result').className),
    { timeout: 120000, polling: 100 });
  const result = await page.$eval('#result', (e) => e.textContent);
  assert.match(result, /@sha256:[0-9a-f]{64}$/, result);
  assert.deepEqual(preview, byPath(listed(dest)));
  fs.rmSync(litter, { recursive: true, force: true });
  await page.close();
});
