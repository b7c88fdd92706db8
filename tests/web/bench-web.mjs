// Benchmark (not a test, npm test does not run it) of the browser uploader, run by
// scripts/bench-web.sh: for one file on
// disk (given to the page like a user's pick, so the browser reads it from disk):
//   build: layer building + hashing in the Web Worker, no upload (MB/s)
//   affix: the whole job against the local registry (seconds)
//   floor: the same file PATCHed to the registry in 64 MiB Blob slices by plain JS in a worker,
//          no tar, no hashing, no lamina: what this browser's uploads alone take (seconds)
import { serve, launchChromium } from './common.mjs';

// web/dist, served as the tests serve it
const [file, dest, runs] = process.argv.slice(2);
const { server, url } = await serve();
const ctx = await launchChromium();
const page = await ctx.newPage();
await page.goto(url);
// an input of the benchmark's own (the page's inputs hand their files over and clear)
await page.evaluate(() => { const i = document.createElement('input'); i.type = 'file'; i.id = 'benchfile'; document.body.append(i); });
await page.setInputFiles('#benchfile', file);
const out = await page.evaluate(async ([dest, runs]) => {
  const f = document.getElementById('benchfile').files[0];
  const w = new Worker('worker.js', { type: 'module' });
  const ask = (msg) => new Promise((res, rej) => {
    w.onmessage = (e) => { const m = e.data; if (m.type === 'error') rej(new Error(m.message)); else if (m.type !== 'progress') res(m.result); };
    w.postMessage(msg);
  });
  const rows = [];
  for (let i = 0; i < runs; i++) {
    const b = await ask({ type: 'build', files: [f], names: [f.name] });
    rows.push({ kind: 'build', ms: b.ms, bytes: b.uncompressed });
  }
  const floor = new Worker(URL.createObjectURL(new Blob([`
    self.onmessage = async ({ data: [f, repo] }) => {
      const t0 = performance.now(), CH = 64 << 20, base = 'http://127.0.0.1:5100/';
      let r = await fetch(base + 'v2/' + repo + '/blobs/uploads/', { method: 'POST' });
      let loc = new URL(r.headers.get('location'), base).href;
      for (let off = 0; off < f.size; off += CH) {
        const b = f.slice(off, Math.min(off + CH, f.size));
        r = await fetch(loc, { method: 'PATCH', body: b, headers: { 'content-range': off + '-' + (off + b.size - 1) } });
        if (r.status !== 202) { self.postMessage({ error: 'PATCH ' + r.status }); return; }
        loc = new URL(r.headers.get('location'), base).href;
      }
      self.postMessage({ ms: performance.now() - t0 });
    };`], { type: 'text/javascript' })));
  for (let i = 0; i < runs; i++) {
    const r = await new Promise((res) => { floor.onmessage = (e) => res(e.data); floor.postMessage([f, dest.split('/').slice(1).join('/')]); });
    if (r.error) throw new Error(r.error);
    rows.push({ kind: 'floor', ms: r.ms });
  }
  for (let i = 0; i < runs; i++) {
    const t = performance.now();
    const r = await ask({ type: 'affix', opts: { base: '127.0.0.1:5100/fixtures/big:latest', dest: `${dest}:w${i}`, chunk_mib: 64 }, files: [f], names: [f.name], card: null });
    rows.push({ kind: 'affix', ms: performance.now() - t, result: r });
  }
  return rows;
}, [dest, +runs]);
for (const r of out) console.log(JSON.stringify(r));
await ctx.close();
server.close();
