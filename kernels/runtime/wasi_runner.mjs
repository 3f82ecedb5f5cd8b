// Runs an edgesparse runner.wasm under Node's WASI: node wasi_runner.mjs runner.wasm ARGS...
// The host's file system root is preopened as "/", so absolute paths in ARGS work unchanged.
import { readFile } from 'node:fs/promises';
import { WASI } from 'node:wasi';
import { argv, exit } from 'node:process';

const [wasmPath, ...args] = argv.slice(2);
if (!wasmPath) {
  console.error('error: usage: node wasi_runner.mjs runner.wasm ARGS...');
  exit(2);
}
// The smallest module using SIMD128: one function () -> v128 returning i8x16.splat(i32.const 0).
const SIMD_PROBE = new Uint8Array([
  0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version
  0x01, 0x05, 0x01, 0x60, 0x00, 0x01, 0x7b, // type section: () -> v128
  0x03, 0x02, 0x01, 0x00, // function section
  0x0a, 0x08, 0x01, 0x06, 0x00, 0x41, 0x00, 0xfd, 0x0f, 0x0b, // code: i32.const 0; i8x16.splat; end
]);
if (!WebAssembly.validate(SIMD_PROBE)) {
  console.error('error: this JavaScript engine lacks WebAssembly SIMD128, which the model needs');
  exit(2);
}
const wasi = new WASI({ version: 'preview1', args: ['runner', ...args], env: {}, preopens: { '/': '/' }, returnOnExit: true });
let module;
try {
  module = await WebAssembly.compile(await readFile(wasmPath));
} catch (e) {
  console.error(`error: cannot load ${wasmPath}: ${e.message}`);
  exit(2);
}
const instance = await WebAssembly.instantiate(module, wasi.getImportObject());
exit(wasi.start(instance));
