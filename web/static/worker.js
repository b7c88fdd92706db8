// The Web Worker: loads lamina's WebAssembly and runs jobs off the page's thread, so the page
// stays responsive while files are tarred, hashed and uploaded.
import init, { affix, inspect, build_only } from './pkg/lamina_web.js';

const ready = init();

self.onmessage = async (ev) => {
  const msg = ev.data;
  const progress = (json) => self.postMessage({ type: 'progress', data: JSON.parse(json) });
  try {
    await ready;
    if (msg.type === 'inspect') {
      const out = await inspect(JSON.stringify(msg.opts), progress);
      self.postMessage({ type: 'inspected', result: JSON.parse(out) });
    } else if (msg.type === 'build') {
      const out = await build_only(msg.files, msg.names, msg.compression || 'none');
      self.postMessage({ type: 'built', result: JSON.parse(out) });
    } else if (msg.type === 'affix') {
      const out = await affix(JSON.stringify(msg.opts), msg.files, msg.names, msg.card || undefined, progress);
      self.postMessage({ type: 'done', result: out });
    }
  } catch (e) {
    self.postMessage({ type: 'error', message: String(e && e.message ? e.message : e) });
  }
};
