// The browser uploader end to end: web/dist served on 127.0.0.1, Debian's chromium driven by
// playwright-core, a real registry (distribution 2.8 with CORS headers, :5100), results checked
// with skopeo and umoci.
//   (web/build.sh; tests/harness/registry.sh start; tests/harness/fixtures.sh) then
//   cd tests/web && npm test
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import fs from 'node:fs';
import path from 'node:path';
import os from 'node:os';
import { serve, sha256, gen, REG, artifacts, checkPushed, launchChromium, dropGenerated, waitResult } from './common.mjs';

const run = `${process.pid}`;

let server, base, browser, ctx;

before(async () => {
  ({ server, url: base } = await serve());
  ctx = await launchChromium();
});

after(async () => {
  await ctx?.close();
  server?.close();
});

async function openPage() {
  const page = await ctx.newPage();
  page.on('console', (m) => { if (m.type() === 'error') console.log('page:', m.text()); });
  await page.goto(base);
  return page;
}

test('drop two files (one of 200 MiB), get the image, check it with skopeo and umoci', async () => {
  const page = await openPage();
  const dest = `${REG}/e2e/web-${run}:v1`;
  await page.fill('#base', `${REG}/fixtures/base:latest`);
  await page.fill('#dest', dest);
  await page.click('#show');
  await page.waitForSelector('#baseinfo:not([hidden]) tbody tr');
  assert.equal(await page.locator('#baseinfo tbody tr').count(), 2, 'the base has two layers');

  await dropGenerated(page, [['model.bin', 200, 7], ['config.json', 0, 0, '{"hidden": 64}\n']]);
  await page.waitForFunction(() => document.querySelectorAll('#filelist li').length === 2);
  const t0 = Date.now();
  await page.click('#go');
  // the big file's own bar moves while it uploads, with bytes, rate and ETA beside it
  const midway = await page.waitForFunction(() => {
    const li = document.querySelector('#filelist li');
    const p = li.querySelector('progress');
    return p.value > 0 && p.value < p.max && /ETA/.test(li.textContent) ? li.textContent : false;
  }, null, { timeout: 120000, polling: 20 });
  assert.match(await midway.jsonValue(), /^model\.bin \(200\.0 MiB\).*MiB of 200\.0 MiB · .*\/s · ETA \d+ s$/);
  const { result, log } = await waitResult(page);
  assert.match(result, /^127\.0\.0\.1:5100\/e2e\/web-\d+@sha256:[0-9a-f]{64}$/, result);
  const bars = await page.$$eval('#filelist progress', (ps) => ps.map((p) => [p.value, p.max]));
  assert.deepEqual(bars, [[200 << 20, 200 << 20], [15, 15]], 'each file\'s bar is full');
  console.log(`browser affix of 200 MiB: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  await page.screenshot({ path: path.join(artifacts, 'finished.png'), fullPage: true });

  // the registry has it: base layers unchanged, one new layer; the files byte for byte
  checkPushed(dest, result, `${REG}/fixtures/base:latest`, (m, b, rootfs) => {
    assert.equal(m.layers.length, b.layers.length + 1);
    assert.equal(m.layers.at(-1).mediaType, 'application/vnd.oci.image.layer.v1.tar');
    const w = path.join(rootfs, 'src/weights');
    assert.equal(sha256(fs.readFileSync(path.join(w, 'model.bin'))), sha256(gen(200, 7)));
    assert.equal(fs.readFileSync(path.join(w, 'config.json'), 'utf8'), '{"hidden": 64}\n');
    assert.ok(fs.existsSync(path.join(rootfs, 'src/predict.py')), 'base files kept');
  });
  await page.close();
});

// A TCP relay to the registry that cuts every connection once, after `cutAfter` bytes went
// towards the registry: the network loss in the middle of a chunk.
function relay(cutAfter) {
  const socks = new Set();
  let up = 0, cut = 0;
  const srv = net.createServer((c) => {
    const r = net.connect(5100, '127.0.0.1');
    socks.add(c); socks.add(r);
    const drop = () => { c.destroy(); r.destroy(); socks.delete(c); socks.delete(r); };
    c.on('data', (d) => {
      up += d.length;
      if (!cut && up > cutAfter) {
        cut++;
        for (const s of socks) s.destroy();
        socks.clear();
        return;
      }
      r.write(d);
    });
    r.on('data', (d) => c.write(d));
    c.on('error', drop); r.on('error', drop); c.on('close', drop); r.on('close', drop);
  });
  return new Promise((res) => srv.listen(0, '127.0.0.1', () => res({ srv, port: srv.address().port, cuts: () => cut })));
}

test('the connection is cut mid-upload: the upload resumes from the registry\'s offset', async () => {
  const { srv, port, cuts } = await relay(100 << 20);
  const page = await openPage();
  const host = `127.0.0.1:${port}`;
  const dest = `${host}/e2e/web-resume-${run}:v1`;
  await page.fill('#base', `${host}/fixtures/base:latest`);
  await page.fill('#dest', dest);
  await dropGenerated(page, [['model.bin', 160, 11]]);
  await page.waitForFunction(() => document.querySelectorAll('#filelist li').length === 1);
  await page.click('#go');
  const { result, log } = await waitResult(page);
  srv.close();
  assert.equal(cuts(), 1, 'the relay cut the connections once');
  assert.match(result, /@sha256:[0-9a-f]{64}$/, `${result}\n${log}`);
  // the page said what happened: the chunk was refused or failed, and the upload went on from
  // the registry's offset (or, when the registry dropped the session, from the start)
  assert.match(log, /resuming from the registry's offset|request failed|starting it over/, log);
  // the layer is whole: it unpacks to the file, byte for byte
  checkPushed(`${REG}/e2e/web-resume-${run}:v1`, result.replace(host, REG), `${REG}/fixtures/base:latest`, (m, b, rootfs) => {
    assert.equal(sha256(fs.readFileSync(path.join(rootfs, 'src/weights/model.bin'))), sha256(gen(160, 11)));
  });
  // and the registry saw the chunk sent again from where it stopped, not the whole layer
  const patches = fs.readFileSync('/tmp/lamina-test/run/plain.log', 'utf8').split('\n')
    .filter((l) => l.includes(`PATCH /v2/e2e/web-resume-${run}/blobs/uploads/`));
  assert.ok(patches.length >= 4, `160 MiB in 64 MiB chunks is 3 PATCHes; with the cut chunk sent again, more: ${patches.length}`);
  await page.close();
});

test('a folder picked with the folder input, as a modelcar with a model card', async () => {
  // a model folder on disk, given to the page's folder input like a user's pick
  const src = fs.mkdtempSync(path.join(os.tmpdir(), 'lamina-folder-'));
  fs.mkdirSync(path.join(src, 'tiny/weights'), { recursive: true });
  fs.writeFileSync(path.join(src, 'tiny/weights/part-1.bin'), gen(3, 21));
  fs.writeFileSync(path.join(src, 'tiny/tokenizer.json'), '{"vocab": 3}\n');
  fs.writeFileSync(path.join(src, 'README.md'), '# tiny\nA model card.\n');
  const page = await openPage();
  const dest = `${REG}/e2e/web-folder-${run}:v1`;
  await page.fill('#base', `${REG}/fixtures/base:latest`);
  await page.fill('#dest', dest);
  await page.check('input[name=layout][value=modelcar]');
  await page.setInputFiles('#folder', path.join(src, 'tiny'));
  await page.setInputFiles('#card', path.join(src, 'README.md'));
  await page.waitForFunction(() => document.querySelectorAll('#filelist li').length === 2);
  const names = await page.$$eval('#filelist li span:first-child', (s) => s.map((x) => x.textContent).sort());
  assert.deepEqual(names, ['tiny/tokenizer.json (13 B)', 'tiny/weights/part-1.bin (3.0 MiB)']);
  await page.click('#go');
  const { result, log } = await waitResult(page);
  assert.match(result, /@sha256:[0-9a-f]{64}$/, `${result}\n${log}`);
  // one layer per file and the card last, with olot's annotations; the files under /models
  checkPushed(dest, result, `${REG}/fixtures/base:latest`, (m, b, rootfs) => {
    const added = m.layers.slice(b.layers.length);
    assert.equal(added.length, 3);
    assert.equal(added[2].annotations['io.opendatahub.modelcar.layer.type'], 'modelcard');
    assert.equal(m.annotations['io.opendatahub.layers.modelcard'], added[2].digest);
    const models = path.join(rootfs, 'models');
    assert.equal(sha256(fs.readFileSync(path.join(models, 'tiny/weights/part-1.bin'))), sha256(gen(3, 21)));
    assert.equal(fs.readFileSync(path.join(models, 'tiny/tokenizer.json'), 'utf8'), '{"vocab": 3}\n');
    assert.equal(fs.readFileSync(path.join(models, 'README.md'), 'utf8'), '# tiny\nA model card.\n');
  });
  fs.rmSync(src, { recursive: true, force: true });
  await page.close();
});
