// Helpers shared by the browser tests (Chromium and Firefox): the static server for web/dist,
// the page's and Node's identical pseudo-random files, and the checks made with skopeo and umoci.
import assert from 'node:assert/strict';
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import os from 'node:os';
import crypto from 'node:crypto';
import { execFileSync, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const here = path.dirname(fileURLToPath(import.meta.url));
export const root = path.resolve(here, '../..');
export const dist = path.join(root, 'web/dist');
export const REG = '127.0.0.1:5100';
export const artifacts = path.join(here, 'artifacts');

// the same pseudo-random bytes in Node and in the page: xorshift32 per 4-byte word, seeded per MiB
export const GEN = `(mib, seed) => {
  const out = new Uint8Array(mib * 1048576);
  const w = new Uint32Array(out.buffer);
  for (let b = 0; b < mib; b++) {
    let x = (seed * 2654435761 + b * 40503 + 1) >>> 0 || 1;
    for (let i = b * 262144, e = i + 262144; i < e; i++) {
      x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
      w[i] = x;
    }
  }
  return out;
}`;
export const gen = eval(GEN);

/// Serves web/dist on 127.0.0.1; resolves to { server, url }.
export function serve() {
  assert.ok(fs.existsSync(path.join(dist, 'pkg/lamina_web_bg.wasm')), 'web/dist is built (web/build.sh)');
  fs.mkdirSync(artifacts, { recursive: true });
  const types = { '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css', '.wasm': 'application/wasm' };
  const server = http.createServer((req, res) => {
    const p = path.join(dist, decodeURIComponent(new URL(req.url, 'http://x').pathname));
    const file = p.endsWith('/') ? path.join(p, 'index.html') : p;
    if (!file.startsWith(dist) || !fs.existsSync(file)) { res.writeHead(404); res.end(); return; }
    res.writeHead(200, { 'content-type': types[path.extname(file)] || 'application/octet-stream' });
    fs.createReadStream(file).pipe(res);
  });
  return new Promise((r) => server.listen(0, '127.0.0.1', () => r({ server, url: `http://127.0.0.1:${server.address().port}/` })));
}

export function sh(cmd, args) {
  return execFileSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 << 20 });
}

export function sha256(buf) {
  return crypto.createHash('sha256').update(buf).digest('hex');
}

/// Checks a pushed image of `dest` (`result` the page's `repo@sha256:...`) against the base with
/// skopeo, unpacks it with umoci, and gives the unpacked rootfs to `check` before cleaning up.
export function checkPushed(dest, result, baseRef, check, creds = null) {
  const auth = creds ? ['--creds', creds] : [];
  const raw = sh('skopeo', ['inspect', '--raw', '--tls-verify=false', ...auth, `docker://${dest}`]);
  assert.equal(`${dest.replace(/:[^:/]+$/, '')}@sha256:${sha256(raw)}`, result, 'the pushed digest is the tag\'s');
  const m = JSON.parse(raw);
  const b = JSON.parse(sh('skopeo', ['inspect', '--raw', '--tls-verify=false', ...auth, `docker://${baseRef}`]));
  assert.deepEqual(m.layers.slice(0, b.layers.length), b.layers, 'the base layers are unchanged');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lamina-web-'));
  try {
    sh('skopeo', ['copy', '-q', '--src-tls-verify=false', ...(creds ? ['--src-creds', creds] : []), `docker://${dest}`, `oci:${dir}/layout:img`]);
    sh('umoci', ['unpack', '--rootless', '--image', `${dir}/layout:img`, `${dir}/bundle`]);
    check(m, b, path.join(dir, 'bundle/rootfs'));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/// Debian's chromium, headless, with a fresh profile (playwright-core; no browser download).
export function launchChromium() {
  return chromium.launchPersistentContext(fs.mkdtempSync(path.join(os.tmpdir(), 'lamina-chromium-')), {
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

/// Drops files made in the page ([name, MiB, seed] or [name, 0, 0, text]) onto the drop zone.
export async function dropGenerated(page, files) {
  const dt = await page.evaluateHandle(([specs, src]) => {
    const g = eval(src);
    const dt = new DataTransfer();
    for (const [name, mib, seed, text] of specs) {
      const body = text !== undefined ? [text] : [g(mib, seed)];
      dt.items.add(new File(body, name));
    }
    return dt;
  }, [files, GEN]);
  await page.dispatchEvent('#drop', 'drop', { dataTransfer: dt });
}

/// Waits until the page shows a digest or an error; gives the result line and the log.
export async function waitResult(page) {
  await page.waitForFunction(() => /@sha256:|error/i.test(document.querySelector('#result').textContent + document.querySelector('#result').className), null, { timeout: 300000 });
  return { result: await page.textContent('#result'), log: await page.textContent('#log') };
}

/// Runs the edge Worker (edge/build) in workerd with `wrangler dev --local` on 127.0.0.1:`port`,
/// with `vars` (name -> value) overriding wrangler.toml's; resolves to the child once it is
/// ready. `stop(child)` ends it.
export async function startWrangler(port, vars) {
  assert.ok(fs.existsSync(path.join(root, 'edge/build/index_bg.wasm')), 'the Worker is built (edge/build.sh)');
  const args = ['wrangler', 'dev', '--local', '--ip', '127.0.0.1', '--port', `${port}`,
    '--show-interactive-dev-session=false',
    // a fresh state directory: Durable Objects of earlier runs are gone
    '--persist-to', fs.mkdtempSync(path.join(os.tmpdir(), 'lamina-wrangler-'))];
  for (const [k, v] of Object.entries(vars)) args.push('--var', `${k}:${v}`);
  const dev = spawn('npx', args, {
    cwd: path.join(root, 'edge'), env: { ...process.env, WRANGLER_SEND_METRICS: 'false' },
    detached: true, stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  await new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`wrangler dev did not start:\n${out}`)), 90000);
    const on = (d) => { out += d; if (/Ready on/.test(out)) { clearTimeout(t); resolve(); } };
    dev.stdout.on('data', on);
    dev.stderr.on('data', on);
    dev.on('exit', (c) => reject(new Error(`wrangler dev exited (${c}):\n${out}`)));
  });
  dev.output = () => out;
  return dev;
}

/// Ends a `startWrangler` child; with LAMINA_WRANGLER_LOG=FILE its output is appended there.
export function stop(dev) {
  if (dev && process.env.LAMINA_WRANGLER_LOG) {
    fs.appendFileSync(process.env.LAMINA_WRANGLER_LOG, dev.output());
  }
  if (dev) { try { process.kill(-dev.pid); } catch (_) { /* gone */ } }
}
