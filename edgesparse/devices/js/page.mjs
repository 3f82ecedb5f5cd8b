// Runs the job the edgesparse host describes in /job.json, in this page, and posts the result to /result:
//   {"kind": "wasi", "wasm": URL, "args": [...], "files": {path: URL}}   the artifact's runner.wasm (WASI shim)
//   {"kind": "ort", "model": URL, "inputs": [{name, dtype, shape, url}], "warmup": N, "runs": N}  onnxruntime-web
import { runWasi } from './wasi_shim.mjs';
import { runOrtJob } from './ort_job.mjs';

async function fetchBytes(url) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`GET ${url}: HTTP ${r.status}`);
  return new Uint8Array(await r.arrayBuffer());
}

function toBase64(bytes) {
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

async function runJob(job) {
  if (job.kind === 'wasi') {
    const files = {};
    for (const [path, url] of Object.entries(job.files)) files[path] = await fetchBytes(url);
    const r = await runWasi(await fetchBytes(job.wasm), job.args, files);
    const out = {};
    for (const [p, d] of Object.entries(r.files)) out[p] = toBase64(d);
    return { exit_code: r.exitCode, stdout: r.stdout, stderr: r.stderr, files: out };
  }
  if (job.kind === 'ort') {
    const ort = await import(job.ort_module);
    ort.env.wasm.wasmPaths = job.ort_dir;
    const inputs = [];
    for (const i of job.inputs) inputs.push({ ...i, bytes: await fetchBytes(i.url) });
    const r = await runOrtJob(ort, await fetchBytes(job.model), inputs, job.warmup, job.runs);
    return { times_ms: r.times_ms, outputs: r.outputs.map((o) => ({ ...o, bytes: toBase64(o.bytes) })) };
  }
  throw new Error(`unknown job kind ${job.kind}`);
}

let result;
try {
  const r = await fetch('/job.json');
  result = await runJob(await r.json());
} catch (e) {
  result = { error: String(e && e.message ? e.message : e) };
}
result.user_agent = navigator.userAgent;
result.cross_origin_isolated = self.crossOriginIsolated;
result.hardware_concurrency = navigator.hardwareConcurrency;
await fetch('/result', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(result) });
window.__edgesparseDone = true;
