// Reads pieces of the user's files for the uploading worker (see readSlice in worker.js): the
// browser hands a file read over in small pieces that only the reading thread can take in, so a
// read on the thread that is busy hashing stalls until it stops. Here the reads go on meanwhile,
// and each piece moves to the hashing thread whole, without a copy.
self.onmessage = async ({ data: { id, file, start, end } }) => {
  try {
    const buf = await file.slice(start, end).arrayBuffer();
    self.postMessage({ id, buf }, [buf]);
  } catch (e) {
    self.postMessage({ id, error: String(e && e.message ? e.message : e) });
  }
};
