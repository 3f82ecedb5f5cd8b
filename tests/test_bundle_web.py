"""The web bundle as a web developer uses it: `edgesparse compile model.onnx --target wasm32` writes web/ with
NAME.wasm + NAME.mjs + NAME.d.ts + package.json + index.html; the module runs in Node 20 and in Debian's
headless Chromium with ONNX Runtime's outputs, installs with `npm install`, and fails clearly on bad input."""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest

from edgesparse.compiler import load_manifest
from edgesparse.harness.verify import onnxruntime_outputs

from conftest import requires_node

REPO = Path(__file__).resolve().parents[1]
# playwright-core comes with the devices' JavaScript (edgesparse/devices/js, `npm ci` in .ci/setup).
PLAYWRIGHT = REPO / "edgesparse" / "devices" / "js" / "node_modules" / "playwright-core"
CHROMIUM = Path("/usr/bin/chromium")
# Where the browser test leaves its screenshot and latency record (git-ignored).
TEST_ARTIFACTS = Path(os.environ.get("EDGESPARSE_TEST_ARTIFACTS", REPO / "out" / "test-artifacts"))
MODEL = "mobilenet_v1"

pytestmark = requires_node


@pytest.fixture(scope="module")
def web(compiled) -> Path:
    """The web/ folder of MobileNetV1 compiled for wasm32."""
    return compiled(MODEL, "wasm32") / "web"


@pytest.fixture(scope="module")
def reference(web, zoo_onnx, tmp_path_factory):
    """A random input (raw float32 file) and ONNX Runtime's output for it."""
    x = np.random.default_rng(7).random((1, 3, 224, 224), dtype=np.float32)
    path = tmp_path_factory.mktemp("web-input") / "input.bin"
    x.tofile(path)
    (y,) = onnxruntime_outputs(zoo_onnx(MODEL), load_manifest(web.parent), [x])
    return path, y


def node(script: str, cwd: Path, *flags: str, timeout: float = 600) -> dict:
    """Runs an ES module script in Node; the script prints one JSON line last."""
    path = cwd / "check.mjs"
    path.write_text(script)
    proc = subprocess.run(["node", "--no-warnings", *flags, str(path)], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_bundle_files_and_package_json(web):
    m = load_manifest(web.parent)
    files = {"mobilenet_v1.wasm", "mobilenet_v1.mjs", "mobilenet_v1.d.ts", "package.json", "index.html", "README.md"}
    assert files <= {p.name for p in web.iterdir()}
    assert m["bundle"]["kind"] == "web" and m["bundle"]["dir"] == "web"
    pkg = json.loads((web / "package.json").read_text())
    assert pkg["name"] == "mobilenet_v1" and pkg["type"] == "module" and pkg["version"]
    assert pkg["types"] == "./mobilenet_v1.d.ts" and pkg["exports"]["."]["import"] == "./mobilenet_v1.mjs"
    assert set(pkg["files"]) == files - {"package.json"}
    dts = (web / "mobilenet_v1.d.ts").read_text()
    assert "run(inputs: Inputs): Float32Array;" in dts and '"input": Float32Array' in dts
    # the CLI's artifact is still there beside the bundle
    assert (web.parent / "runner.wasm").is_file() and (web.parent / "wasi_runner.mjs").is_file()
    total = m["bundle"]["total_bytes"]
    print(f"\nMobileNetV1 dense web bundle: {total / 1e6:.2f} MB ({m['bundle']['bytes']['mobilenet_v1.wasm'] / 1e6:.2f} "
          f"MB wasm, weights {m['weight_bytes'] / 1e6:.2f} MB)")


def test_wasm_is_a_reactor_without_imports(web, tmp_path):
    r = node(f"""
const bytes = (await import('node:fs')).readFileSync({json.dumps(str(web / 'mobilenet_v1.wasm'))});
const mod = new WebAssembly.Module(bytes);
console.log(JSON.stringify({{imports: WebAssembly.Module.imports(mod),
  exports: WebAssembly.Module.exports(mod).map((e) => e.name)}}));
""", tmp_path)
    assert r["imports"] == []
    assert {"memory", "es_open", "es_run", "es_close", "es_input", "es_output"} <= set(r["exports"])
    assert "_start" not in r["exports"]


def test_node_runs_like_onnxruntime(web, reference, tmp_path):
    x_path, y_ref = reference
    r = node(f"""
import {{ Model, modelInfo }} from {json.dumps((web / 'mobilenet_v1.mjs').as_uri())};
import {{ readFileSync }} from 'node:fs';
const raw = readFileSync({json.dumps(str(x_path))});
const x = new Float32Array(raw.buffer, raw.byteOffset, raw.length / 4);
const m = await Model.load();   // the .wasm beside the module
const y = m.run(x);
const byName = m.runAll({{ input: x }}).output;
console.log(JSON.stringify({{ y: Array.from(y), same: byName.every((v, i) => v === y[i]), type: y.constructor.name,
  inputs: m.inputs, outputs: m.outputs, info: modelInfo.inputs }}));
m.close();
""", tmp_path)
    assert r["type"] == "Float32Array" and r["same"]
    assert r["inputs"] == [{"name": "input", "shape": [1, 3, 224, 224], "dtype": "float32", "size": 150528}]
    assert r["outputs"][0]["shape"] == [1, 1000] and r["info"] == r["inputs"]
    np.testing.assert_allclose(np.array(r["y"], dtype=np.float32), y_ref.ravel(), atol=1e-4, rtol=0)


def test_bad_input_and_bad_wasm_throw_clear_errors(web, tmp_path):
    corrupt = tmp_path / "corrupt.wasm"
    data = bytearray((web / "mobilenet_v1.wasm").read_bytes())
    for at in (1000, 4000, 9000):  # flip bytes in the code section
        data[at] ^= 0xFF
    corrupt.write_bytes(bytes(data))
    (tmp_path / "page.wasm").write_text("<html>404 Not Found</html>")
    r = node(f"""
import {{ Model, ModelError, simdSupported }} from {json.dumps((web / 'mobilenet_v1.mjs').as_uri())};
const out = {{}};
async function expectError(key, fn) {{
  try {{ await fn(); out[key] = 'no error'; }}
  catch (e) {{ out[key] = (e instanceof Error && e instanceof ModelError ? '' : 'NOT A ModelError: ') + e.message; }}
}}
const m = await Model.load();
await expectError('dtype', () => m.run(new Float64Array(150528)));
await expectError('plain array', () => m.run(new Array(150528).fill(0)));
await expectError('length', () => m.run(new Float32Array(100)));
await expectError('unknown name', () => m.run({{ image: new Float32Array(150528) }}));
await expectError('corrupt', () => Model.load({json.dumps(str(corrupt))}));
await expectError('html', () => Model.load({json.dumps(str(tmp_path / 'page.wasm'))}));
await expectError('missing file', () => Model.load({json.dumps(str(tmp_path / 'nope.wasm'))}));
await expectError('threads', () => Model.load(undefined, {{ threads: 4 }}));
const ok = m.run(new Float32Array(150528)).length;   // still usable after refused inputs
m.close();
await expectError('closed', () => m.run(new Float32Array(150528)));
const validate = WebAssembly.validate;
WebAssembly.validate = () => false;   // an engine without SIMD128
out.simd = simdSupported();
await expectError('no simd', () => Model.load());
WebAssembly.validate = validate;
out.ok = ok;
console.log(JSON.stringify(out));
""", tmp_path)
    assert r["ok"] == 1000
    assert r["dtype"] == "mobilenet_v1: input 'input' must be a Float32Array (float32), got Float64Array"
    assert r["plain array"] == "mobilenet_v1: expected 1 input(s), got an array of 150528"
    assert r["length"] == "mobilenet_v1: input 'input' must have 150528 elements (shape [1, 3, 224, 224]), got 100"
    assert r["unknown name"] == "mobilenet_v1: unknown input(s) 'image'"
    assert r["corrupt"].startswith("mobilenet_v1: the .wasm is corrupted or not built for this model (")
    assert r["html"].startswith("mobilenet_v1: not a WebAssembly module (26 bytes, no \\0asm header)")
    assert r["missing file"].startswith("mobilenet_v1: cannot read ") and "nope.wasm" in r["missing file"]
    assert "single-threaded" in r["threads"] and "Cross-Origin-Embedder-Policy: require-corp" in r["threads"]
    assert r["closed"] == "mobilenet_v1: the model is closed"
    assert r["simd"] is False and "lacks WebAssembly SIMD128" in r["no simd"]


def test_100_load_close_cycles_keep_memory_stable(web, tmp_path):
    r = node(f"""
import {{ Model }} from {json.dumps((web / 'mobilenet_v1.mjs').as_uri())};
import {{ readFileSync }} from 'node:fs';
const bytes = readFileSync({json.dumps(str(web / 'mobilenet_v1.wasm'))});
const x = new Float32Array(150528).fill(0.5);
function rssMB() {{ globalThis.gc(); globalThis.gc(); return process.memoryUsage().rss / 1e6; }}
const rss = {{}};
let first;
for (let i = 1; i <= 100; ++i) {{
  const m = await Model.load(bytes);   // compile + instantiate + arena, every cycle
  const y = m.run(x);
  first = first || Array.from(y);
  if (y.some((v, j) => v !== first[j])) throw new Error(`cycle ${{i}} gave another output`);
  m.close();
  if (i === 10 || i === 100) rss[i] = rssMB();
}}
console.log(JSON.stringify(rss));
""", tmp_path, "--expose-gc")
    growth = r["100"] - r["10"]
    print(f"\nRSS after 10 cycles {r['10']:.0f} MB, after 100 {r['100']:.0f} MB")
    # one leaked instance holds ~27 MB (weights + arena): 90 leaked cycles would add gigabytes
    assert growth < 60, f"RSS grew {growth:.0f} MB over 90 load/run/close cycles"


def test_npm_install_into_scratch_project(web, tmp_path):
    if not shutil.which("npm"):
        pytest.skip("npm not installed")
    pack = subprocess.run(["npm", "pack", "--json", "--pack-destination", str(tmp_path), str(web)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert pack.returncode == 0, pack.stderr
    packed = json.loads(pack.stdout)[0]
    assert {f["path"] for f in packed["files"]} == {"mobilenet_v1.wasm", "mobilenet_v1.mjs", "mobilenet_v1.d.ts",
                                                    "package.json", "index.html", "README.md"}
    app = tmp_path / "app"
    app.mkdir()
    (app / "package.json").write_text(json.dumps({"name": "scratch-app", "private": True, "type": "module"}))
    inst = subprocess.run(["npm", "install", "--offline", "--no-audit", "--no-fund", f"../{packed['filename']}"],
                          cwd=app, capture_output=True, text=True)
    assert inst.returncode == 0, inst.stderr
    assert (app / "node_modules" / "mobilenet_v1" / "mobilenet_v1.wasm").is_file()
    r = node("""
import { Model } from 'mobilenet_v1';
const m = await Model.load();
const y = m.run(new Float32Array(m.inputs[0].size));
console.log(JSON.stringify({ n: y.length, finite: y.every(Number.isFinite) }));
m.close();
""", app)
    assert r == {"n": 1000, "finite": True}


class _IsolatedHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with the headers a cross-origin isolated page gets, and the MIME types modules need."""

    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".wasm": "application/wasm", ".mjs": "text/javascript", ".html": "text/html"}

    def end_headers(self):
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, *args):
        pass


DRIVER = r"""
// Opens the demo page in Debian's headless Chromium and reports what the page computed.
const { chromium } = require('playwright-core');
const [url, screenshot] = process.argv.slice(2);
(async () => {
  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
           '--disable-component-update', '--disable-sync'],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 900, height: 700 } });
    const logs = [];
    page.on('console', (m) => logs.push(m.text()));
    page.on('pageerror', (e) => logs.push(String(e)));
    await page.goto(url);
    await page.waitForFunction(() => window.edgesparseDemo && window.edgesparseDemo.done, null, { timeout: 300000 });
    let state = await page.evaluate(() => ({
      ...window.edgesparseDemo, isolated: self.crossOriginIsolated, userAgent: navigator.userAgent,
      status: document.getElementById('status').textContent, latencyText: document.getElementById('latency').textContent,
      topRows: document.querySelectorAll('#top tbody tr').length,
    }));
    await page.screenshot({ path: screenshot, fullPage: true });
    // the same clear errors in the browser: wrong dtype, wrong length, a corrupted .wasm fetched over http
    state.errors = await page.evaluate(async () => {
      const { Model } = await import('./mobilenet_v1.mjs');
      const out = {};
      const m = await Model.load('./mobilenet_v1.wasm');
      for (const [key, x] of [['dtype', new Float64Array(150528)], ['length', new Float32Array(3)]]) {
        try { m.run(x); out[key] = 'no error'; } catch (e) { out[key] = `${e.name}: ${e.message}`; }
      }
      m.close();
      try { await Model.load('./corrupt.wasm'); out.corrupt = 'no error'; } catch (e) { out.corrupt = `${e.name}: ${e.message}`; }
      return out;
    });
    // the image path: feed the page its own screenshot through the file input
    await page.setInputFiles('#image', screenshot);
    await page.waitForFunction(() => document.getElementById('status').textContent.includes('.png'), null,
                               { timeout: 120000 });
    state.imageRun = await page.evaluate(() => ({ status: document.getElementById('status').textContent,
      error: window.edgesparseDemo.error, output: window.edgesparseDemo.output }));
    await page.screenshot({ path: screenshot.replace(/\.png$/, '_image.png'), fullPage: true });
    console.log(JSON.stringify({ ...state, logs }));
  } finally {
    await browser.close();
  }
})().catch((e) => { console.error(e); process.exit(1); });
"""


@pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium (apt-get install -y chromium; .ci/setup does)")
@pytest.mark.skipif(not PLAYWRIGHT.exists(), reason="no playwright-core in edgesparse/devices/js/node_modules (npm ci --prefix edgesparse/devices/js; .ci/setup does)")
def test_demo_page_in_headless_chromium(web, reference, tmp_path):
    x_path, y_ref = reference
    site = tmp_path / "site"
    shutil.copytree(web, site)
    shutil.copy(x_path, site / "input.bin")
    corrupt = bytearray((web / "mobilenet_v1.wasm").read_bytes())
    for at in (1000, 4000, 9000):  # as in the Node test: one flipped byte can land on a harmless immediate
        corrupt[at] ^= 0xFF
    (site / "corrupt.wasm").write_bytes(bytes(corrupt))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_IsolatedHandler, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    TEST_ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = TEST_ARTIFACTS / "web_demo_mobilenet_v1.png"
    shot.unlink(missing_ok=True)
    (tmp_path / "drive.cjs").write_text(DRIVER)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/index.html?input=input.bin&runs=20&warmup=5"
        proc = subprocess.run(["node", str(tmp_path / "drive.cjs"), url, str(shot)], capture_output=True, text=True,
                              timeout=600, env={**os.environ, "NODE_PATH": str(PLAYWRIGHT.parent)})
    finally:
        server.shutdown()
        server.server_close()
    assert proc.returncode == 0, proc.stderr
    state = json.loads(proc.stdout.strip().splitlines()[-1])
    assert state["error"] is None, state
    assert "HeadlessChrome" in state["userAgent"] and state["isolated"] is True
    np.testing.assert_allclose(np.array(state["output"], dtype=np.float32), y_ref.ravel(), atol=1e-4, rtol=0)
    assert state["topRows"] == 5 and state["latencyText"].startswith("latency: median")
    image = state["imageRun"]
    assert image["error"] is None and "web_demo_mobilenet_v1.png" in image["status"]
    assert len(image["output"]) == 1000 and image["output"] != state["output"]
    errors = state["errors"]
    assert errors["dtype"] == "ModelError: mobilenet_v1: input 'input' must be a Float32Array (float32), got Float64Array"
    assert errors["length"].startswith("ModelError: mobilenet_v1: input 'input' must have 150528 elements")
    assert errors["corrupt"].startswith("ModelError: mobilenet_v1: the .wasm is corrupted or not built for this model")
    lat = state["latency"]
    record = {"browser": state["userAgent"], "median_ms": lat["median"], "min_ms": lat["min"], "runs": lat["runs"],
              "warmup": lat["warmup"], "screenshot": str(shot)}
    (TEST_ARTIFACTS / "web_demo_mobilenet_v1.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"\nChromium MobileNetV1 latency: median {lat['median']:.1f} ms, min {lat['min']:.1f} ms "
          f"({lat['runs']} runs); screenshot {shot}")
    assert shot.is_file() and shot.stat().st_size > 10_000
