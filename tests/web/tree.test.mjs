// The page's file trees, in headless Chromium: "Show the base's layers and files" lists the
// base's merged files (read inside its layers, as `lamina ls` reads them: tar headers by range
// requests, a gzip layer streamed) under "Base layers", and "What the destination will hold"
// shows, before anything is sent, the tree `lamina ls --json DEST` lists once the page has
// pushed: a nested folder under the weights path, a modelcar's layer per file and card, a
// ModelPack's files side by side. Cancel while the files are read keeps the layer table.
//   (web/build.sh; tests/harness/registry.sh start; tests/harness/fixtures.sh; cargo build)
//   then cd tests/web && node --test tree.test.mjs
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { serve, sh, gen, REG, launchChromium, waitResult, lamina, modelFolder, dropFolder } from './common.mjs';

const run = `${process.pid}`;
const BASE = `${REG}/fixtures/base:latest`;
const litter = fs.mkdtempSync(path.join(os.tmpdir(), 'lamina-tree-'));
let server, url, ctx;

before(async () => {
  ({ server, url } = await serve());
  ctx = await launchChromium();
});

after(async () => {
  await ctx?.close();
  server?.close();
  fs.rmSync(litter, { recursive: true, force: true });
});

async function openPage() {
  const page = await ctx.newPage();
  page.on('console', (m) => { if (m.type() === 'error') console.log('page:', m.text()); });
  await page.goto(url);
  return page;
}

/// What `lamina ls --json REF` lists: [{path, type, size, mode, layer, link}].
const listed = (ref) => JSON.parse(lamina(['ls', '--json', ref])).entries;

/// The entries the tree in `sel` shows, every directory opened (they are made when opened),
/// as ls --json gives them.
async function shown(page, sel) {
  for (;;) {
    const closed = await page.$$eval(`${sel} details:not([open])`, (ds) => { for (const d of ds) d.open = true; return ds.length; });
    if (!closed) break;
    // (a toggle event makes the children)
    await page.waitForFunction((s) => [...document.querySelectorAll(`${s} details[open]`)].every((d) => d.children.length > 1), sel);
  }
  return page.$$eval(`${sel} li`, (lis) => lis.map((li) => {
    const d = li.dataset;
    return { path: d.path, type: d.type, size: Number(d.size), mode: d.mode, layer: d.layer === '' ? null : Number(d.layer), link: d.link || null };
  }).sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0)));
}

const byPath = (es) => [...es].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));

/// Shows `base`'s layers and files; gives the status line under "Files".
async function showBase(page, base) {
  await page.fill('#base', base);
  await page.click('#show');
  await page.waitForFunction(() => /^\d+ entries\. Read:/.test(document.querySelector('#treestat').textContent) ||
    document.querySelector('#result').className === 'error', null, { timeout: 60000 });
  assert.equal(await page.textContent('#result'), '', await page.textContent('#log'));
  return page.textContent('#treestat');
}

/// Waits for the preview to be worked out; gives its status line.
async function previewed(page) {
  await page.waitForFunction(() => {
    const s = document.querySelector('#previewstat').textContent;
    return !document.querySelector('#previewinfo').hidden && s && s !== 'Working it out…';
  }, null, { timeout: 30000 });
  return page.textContent('#previewstat');
}

test('the base\'s files are what lamina ls lists, read by ranges where the layer allows', async () => {
  // a modelcar (uncompressed model layers) on the gzip base
  const m = modelFolder(litter);
  const car = `${REG}/e2e/tree-car-${run}:v1`;
  lamina(['pack', '-q', m.dir, '--format', 'modelcar', '--base', BASE, '--dest', car], { SOURCE_DATE_EPOCH: '946684800' });
  const page = await openPage();
  const stat = await showBase(page, car);
  const want = listed(car);
  assert.deepEqual(await shown(page, '#basetree'), byPath(want));
  // every model file, each from its own layer, and the base's own files
  const paths = want.map((e) => e.path);
  for (const f of Object.keys(m.files)) assert.ok(paths.includes(`models/${f}`), f);
  assert.ok(paths.includes('bin/busybox'), 'the base layer\'s files');
  // the cost line: the model layers by range requests, the gzip base layers streamed
  const rows = await page.locator('#baseinfo tbody tr').count();
  const read = JSON.parse(lamina(['ls', '--json', car])).read;
  assert.match(stat, new RegExp(`^${want.length} entries\\. Read: ${read.rangeRequests} range requests? \\(.*\\), compressed layers? ${read.streamedLayers.join(', ')} streamed`), stat);
  assert.ok(rows > read.streamedLayers.length, 'some layers were read by ranges');
  // the first level is there at once; a directory's children come when it is opened
  const page2 = await openPage();
  await showBase(page2, car);
  assert.equal(await page2.locator('#basetree li[data-path="models/model.safetensors"]').count(), 0, 'made before it was opened');
  await page2.click('#basetree li[data-path="models"] > details > summary');
  await page2.waitForSelector('#basetree li[data-path="models/model.safetensors"]');
  const meta = await page2.textContent('#basetree li[data-path="models/model.safetensors"] .meta');
  assert.match(meta, /MiB · 0644 · layer \d+/, meta);
  await page.close();
  await page2.close();
});

test('what the destination will hold, before the push, is what lamina ls lists after it: a nested folder', async () => {
  const model = path.join(litter, 'nested', 'model');
  const files = { 'unet/config.json': '{"u": 1}\n', 'vae/config.json': '{"v": 2}\n', 'sub/deeper/notes.txt': 'deep\n' };
  for (const [p, text] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(model, p)), { recursive: true });
    fs.writeFileSync(path.join(model, p), text);
  }
  fs.writeFileSync(path.join(model, 'weights.bin'), gen(1, 51));
  const page = await openPage();
  const dest = `${REG}/e2e/tree-nested-${run}:v1`;
  await page.fill('#dest', dest);
  await page.setInputFiles('#folder', model);
  // no preview until the base's files are known
  assert.equal(await page.locator('#previewinfo').isHidden(), true);
  await showBase(page, BASE);
  const stat = await previewed(page);
  assert.match(stat, /new in layer 2 \(marked\): 4 files/, stat);
  // the directories holding the new files start open, the new entries marked
  assert.ok(await page.locator('#previewtree li.new[data-path="src/weights/model/unet/config.json"]').isVisible());
  const before = await shown(page, '#previewtree');
  // a path typed changes it
  await page.fill('#path', '/opt/w');
  await page.waitForSelector('#previewtree li[data-path="opt/w/model/weights.bin"]');
  await page.fill('#path', '/src/weights');
  await page.waitForSelector('#previewtree li[data-path="src/weights/model/weights.bin"]');
  await page.click('#go');
  const { result, log } = await waitResult(page);
  assert.match(result, /@sha256:[0-9a-f]{64}$/, `${result}\n${log}`);
  assert.deepEqual(before, byPath(listed(dest)));
  await page.close();
});

test('a modelcar\'s preview (a layer per file, the card last) and a ModelPack\'s (side by side) are what lamina ls lists', async () => {
  const page = await openPage();
  const dest = `${REG}/e2e/tree-mc-${run}:v1`;
  await page.fill('#dest', dest);
  await page.check('input[value=modelcar]');
  const dir = path.join(litter, 'mc');
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'a.gguf'), gen(1, 52));
  fs.writeFileSync(path.join(dir, 'b.bin'), 'b\n');
  fs.writeFileSync(path.join(dir, 'README.md'), '# card\n');
  await page.setInputFiles('#files', [path.join(dir, 'a.gguf'), path.join(dir, 'b.bin')]);
  await page.setInputFiles('#card', path.join(dir, 'README.md'));
  await showBase(page, BASE);
  const stat = await previewed(page);
  assert.match(stat, /new in layers 2–4/, stat);
  const before = await shown(page, '#previewtree');
  assert.deepEqual(before.filter((e) => e.path.startsWith('models/')).map((e) => [e.path, e.layer]),
    [['models/README.md', 4], ['models/a.gguf', 2], ['models/b.bin', 3]]);
  await page.click('#go');
  let { result, log } = await waitResult(page);
  assert.match(result, /@sha256:[0-9a-f]{64}$/, `${result}\n${log}`);
  assert.deepEqual(before, byPath(listed(dest)));

  // a ModelPack needs no base: its preview comes with the files
  const page2 = await openPage();
  const pack = `${REG}/e2e/tree-pack-${run}:v1`;
  const m = modelFolder(path.join(litter, 'pack'));
  await page2.check('input[value=modelpack]');
  await page2.fill('#dest', pack);
  await dropFolder(page2, m.dir);
  const pstat = await previewed(page2);
  assert.match(pstat, /^7 files .* one layer each; left out \(hidden or a cache\): /, pstat);
  for (const f of m.leftOut) assert.ok(pstat.includes(`tiny/${f}`), `${f} in ${pstat}`);
  const packed = await shown(page2, '#previewtree');
  await page2.click('#go');
  ({ result, log } = await waitResult(page2));
  assert.match(result, /@sha256:[0-9a-f]{64}$/, `${result}\n${log}`);
  assert.deepEqual(packed, byPath(listed(pack)));
  await page.close();
  await page2.close();
});

test('Cancel while the base\'s files are read stops it and keeps the layer table; Show again works', async () => {
  // a front end with CORS that holds every layer blob's GET (manifests and the config pass)
  const m = JSON.parse(sh('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${BASE}`]));
  const layers = m.layers.map((l) => l.digest);
  const held = [];
  const front = http.createServer((req, res) => {
    if (req.method === 'OPTIONS') {
      res.writeHead(204, { 'access-control-allow-origin': '*', 'access-control-allow-headers': '*', 'access-control-allow-methods': 'GET, HEAD' });
      res.end();
      return;
    }
    if (layers.some((d) => req.url.includes(`/blobs/${d}`))) { held.push(res); return; }
    const up = http.request({ host: '127.0.0.1', port: 5100, method: req.method, path: req.url, headers: req.headers }, (r) => {
      res.writeHead(r.statusCode, r.headers);
      r.pipe(res);
    });
    up.on('error', () => { res.writeHead(502); res.end(); });
    req.pipe(up);
  });
  await new Promise((r) => front.listen(0, '127.0.0.1', r));
  const via = `127.0.0.1:${front.address().port}/fixtures/base:latest`;
  const page = await openPage();
  await page.fill('#base', via);
  await page.click('#show');
  await page.waitForFunction(() => /^Reading the base/.test(document.querySelector('#treestat').textContent));
  for (let i = 0; i < 100 && !held.length; i++) await new Promise((r) => setTimeout(r, 50));
  assert.ok(held.length, 'a layer is being read');
  await page.click('#cancel');
  await page.waitForFunction(() => /Cancelled/.test(document.querySelector('#result').textContent));
  assert.match(await page.textContent('#treestat'), /^Cancelled: the base's files were not read/);
  assert.equal(await page.locator('#baseinfo tbody tr').count(), layers.length, 'the table stays');
  assert.equal(await page.locator('#baseinfo').isHidden(), false);
  for (const r of held) r.destroy();
  front.close();
  // the same page, another base: read whole
  await showBase(page, BASE);
  assert.deepEqual(await shown(page, '#basetree'), byPath(listed(BASE)));
  await page.close();
});
