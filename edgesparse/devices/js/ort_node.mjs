// onnxruntime-web in Node: node ort_node.mjs JOB.json. The job: {"model": path, "inputs": [{name, dtype, shape,
// file}], "warmup": N, "runs": N, "out_dir": path}. Prints {"times_ms": [...], "outputs": [{name, dtype, shape,
// file}]} and writes each output's raw bytes to out_dir.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as ort from 'onnxruntime-web';
import { runOrtJob } from './ort_job.mjs';

const job = JSON.parse(readFileSync(process.argv[2], 'utf8'));
try {
  const inputs = job.inputs.map((i) => ({ ...i, bytes: new Uint8Array(readFileSync(i.file)) }));
  const r = await runOrtJob(ort, new Uint8Array(readFileSync(job.model)), inputs, job.warmup, job.runs);
  const outputs = r.outputs.map((o, k) => {
    const file = join(job.out_dir, `ort_out${k}.bin`);
    writeFileSync(file, o.bytes);
    return { name: o.name, dtype: o.dtype, shape: o.shape, file };
  });
  console.log(JSON.stringify({ times_ms: r.times_ms, outputs }));
} catch (e) {
  console.error(`error: onnxruntime-web: ${e && e.message ? e.message : e}`);
  process.exit(3);
}
