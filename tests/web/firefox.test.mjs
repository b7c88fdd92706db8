// The browser uploader in Firefox: Debian's firefox-esr driven over WebDriver BiDi by
// puppeteer-core (no browser download), the same page and registry as upload.test.mjs. Two files
// are dropped (one of 100 MiB, two 64 MiB chunks), the image is checked with skopeo and umoci;
// a model folder dropped on the page is packed as a ModelPack and compared with
// `lamina pack`'s (target/debug/lamina or LAMINA_BIN).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import os from 'node:os';
import puppeteer from 'puppeteer-core';
import { serve, sha256, gen, GEN, REG, artifacts, checkPushed, modelFolder, checkModelPack, dropFolder } from './common.mjs';

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
