// The Worker's entry: instantiates lamina-edge's WebAssembly (built by edge/build.sh with
// wasm-bindgen --target web; worker-build is not needed) and hands it every request.
import { initSync, fetch as handle } from './build/index.js';
import wasm from './build/index_bg.wasm';

initSync({ module: wasm });

export default {
  fetch: (request, env, ctx) => handle(request, env, ctx),
};
