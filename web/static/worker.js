// The Web Worker: loads lamina's WebAssembly and runs jobs off the page's thread, so the page
// stays responsive while files are tarred, hashed and uploaded.
import init, { affix, base_files, inspect, layer_digests, pack, preview } from './pkg/lamina_web.js';

const ready = init();

// Reads `file` bytes start..end for the wasm (which calls it when it is there) on a reader
// worker; where workers cannot start workers, on this thread.
let reader = null;
let nextRead = 0;
const reads = new Map();
self.laminaReadSlice = (file, start, end) => {
  if (!reader) {
    try {
      reader = new Worker(new URL('./reader.js', import.meta.url));
    } catch (_) {
      return file.slice(start, end).arrayBuffer();
    }
    reader.onmessage = ({ data: { id, buf, error } }) => {
      const r = reads.get(id);
      reads.delete(id);
      if (error !== undefined) r.reject(new Error(error)); else r.resolve(buf);
    };
    reader.onerror = (e) => {
      for (const r of reads.values()) r.reject(new Error(`the reader worker failed: ${e.message}`));
      reads.clear();
    };
  }
  const id = nextRead++;
  return new Promise((resolve, reject) => {
    reads.set(id, { resolve, reject });
    reader.postMessage({ id, file, start, end });
  });
};

// A ModelPack's files upload several at once, and the first failure ends the job: its requests
// go out with the job's signal, so that those still in flight stop with it (the other uploads'
// bodies would otherwise go on to their ends, holding the browser's few connections to the
// registry). Other jobs have one request in flight at a time.
let job = null;
const fetchOf = self.fetch.bind(self);
self.fetch = (input, init) => fetchOf(input, job ? { ...init, signal: job.signal } : init);

self.onmessage = async (ev) => {
  const msg = ev.data;
  // what the destination will hold: pure, quick, answered by id (the page's previewer worker)
  if (msg.type === 'preview') {
    await ready;
    try {
      self.postMessage({ type: 'previewed', id: msg.id, result: JSON.parse(preview(JSON.stringify(msg.ask))) });
    } catch (e) {
      self.postMessage({ type: 'previewed', id: msg.id, error: String(e && e.message ? e.message : e) });
    }
    return;
  }
  const progress = (json) => self.postMessage({ type: 'progress', data: JSON.parse(json) });
  const mine = job = msg.type === 'pack' ? new AbortController() : null;
  try {
    await ready;
    if (msg.type === 'inspect') {
      const out = await inspect(JSON.stringify(msg.opts), progress);
      self.postMessage({ type: 'inspected', result: JSON.parse(out) });
    } else if (msg.type === 'files') {
      // the base's merged file tree, read inside its layers (lamina ls --json)
      const out = await base_files(JSON.stringify(msg.opts), progress);
      self.postMessage({ type: 'files', result: JSON.parse(out) });
    } else if (msg.type === 'build') {
      const out = await layer_digests(msg.files, msg.names, msg.dest ?? 'src/weights', msg.compression || 'none');
      self.postMessage({ type: 'built', result: JSON.parse(out) });
    } else if (msg.type === 'affix') {
      const out = await affix(JSON.stringify(msg.opts), msg.files, msg.names, msg.card || undefined, progress);
      self.postMessage({ type: 'done', result: out });
    } else if (msg.type === 'pack') {
      // a ModelPack of the files alone; roots: the folder each file came in (null: dropped alone)
      const out = await pack(JSON.stringify(msg.opts), msg.files, msg.names, msg.roots, progress);
      self.postMessage({ type: 'done', result: out });
    }
  } catch (e) {
    mine?.abort();
    // which registry failed and how (see page_error in web/src/lib.rs): the page names it and
    // classifies the error by its HTTP status, not by the message's text
    const { registry, status, auth, network } = e || {};
    self.postMessage({ type: 'error', message: String(e && e.message ? e.message : e), registry, status, auth, network });
  }
};
