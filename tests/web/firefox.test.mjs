// The browser uploader in Firefox: Debian's firefox-esr driven over WebDriver BiDi by
// puppeteer-core (no browser download), the same page and registry as upload.test.mjs. Two files
// are dropped (one of 100 MiB, two 64 MiB chunks), the image is checked with skopeo and umoci.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import os from 'node:os';
import puppeteer from 'puppeteer-core';
import { serve, sha256, gen, GEN, REG, artifacts, checkPushed } from './common.mjs';

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
