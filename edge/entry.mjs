// The Worker's entry: instantiates lamina-edge's WebAssembly (built by edge/build.sh with
// wasm-bindgen --target web; worker-build is not needed) and hands it every request. The
// Durable Object class that runs hook jobs is exported as wasm-bindgen made it.
import { initSync, fetch as handle, LaminaJob } from './build/index.js';
import wasm from './build/index_bg.wasm';

initSync({ module: wasm });

export { LaminaJob };

export default {
  fetch: (request, env, ctx) => handle(request, env, ctx),
};
