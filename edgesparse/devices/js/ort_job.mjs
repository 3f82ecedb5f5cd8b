// One onnxruntime-web benchmark, shared by Node (ort_node.mjs) and the browser page (page.mjs): single-threaded
// WASM with SIMD, the model's outputs from the last run, per-run latency in milliseconds.
const TYPED = {
  float32: Float32Array, float64: Float64Array, int32: Int32Array, int64: BigInt64Array,
  int8: Int8Array, uint8: Uint8Array, bool: Uint8Array,
};

export async function runOrtJob(ort, modelBytes, inputs, warmup, runs) {
  ort.env.wasm.numThreads = 1;
  ort.env.wasm.simd = true;
  const session = await ort.InferenceSession.create(modelBytes, { executionProviders: ['wasm'] });
  const feeds = {};
  for (const i of inputs) {
    const Typed = TYPED[i.dtype];
    if (!Typed) throw new Error(`input ${i.name}: dtype ${i.dtype} not supported here`);
    const copy = i.bytes.slice(); // aligned, owned buffer
    feeds[i.name] = new ort.Tensor(i.dtype, new Typed(copy.buffer, 0, copy.length / Typed.BYTES_PER_ELEMENT), i.shape);
  }
  let out;
  for (let k = 0; k < warmup; ++k) out = await session.run(feeds);
  const times = [];
  for (let k = 0; k < runs; ++k) {
    const t0 = performance.now();
    out = await session.run(feeds);
    times.push(performance.now() - t0);
  }
  const outputs = session.outputNames.map((name) => {
    const t = out[name];
    return { name, dtype: t.type, shape: t.dims, bytes: new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength) };
  });
  await session.release();
  return { times_ms: times, outputs };
}
