"""`chromium`: Debian's headless Chromium runs the wasm32 artifact in a web page.

The host serves a page, the artifact's runner.wasm and the input files from an HTTP server on 127.0.0.1 (with
the cross-origin isolation headers a threads build would need: COOP same-origin, COEP require-corp). Chromium,
driven by playwright-core (js/chromium_driver.mjs), opens the page; the page runs the same WASI runner as the
node device does, under a minimal WASI shim of ours (js/wasi_shim.mjs: arguments, clocks, stdout, in-memory
files), and posts stdout, stderr, the exit code and the output files back. The same page runs onnxruntime-web
for `--compare ort`.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from ..errors import EdgesparseError
from .base import DEFAULT_TIMEOUT_S, Device, failure_detail
from .remote import split_file_args

JS_DIR = Path(__file__).parent / "js"
CHROMIUM = os.environ.get("EDGESPARSE_CHROMIUM", "/usr/bin/chromium")
_TYPES = {".html": "text/html", ".mjs": "text/javascript", ".js": "text/javascript", ".wasm": "application/wasm",
          ".json": "application/json"}


def node_modules_hint() -> str:
    return f"run `npm ci --prefix {JS_DIR}` (the JavaScript packages: onnxruntime-web, playwright-core)"


def check_node_modules(package: str) -> None:
    if not (JS_DIR / "node_modules" / package / "package.json").is_file():
        raise EdgesparseError(f"{package} is not installed; {node_modules_hint()}")


class _PageServer:
    """Serves one job to one page on 127.0.0.1 and receives its result."""

    def __init__(self, job: dict, routes: dict[str, Path]):
        self.job, self.routes = job, routes
        self.result: dict | None = None
        self.done = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _headers(self, code: int, ctype: str, length: int):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(length))
                self.send_header("Cache-Control", "no-store")
                self.send_header("Cross-Origin-Opener-Policy", "same-origin")
                self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
                self.send_header("Cross-Origin-Resource-Policy", "same-origin")
                self.end_headers()

            def do_GET(self):
                path = self.path.split("?")[0]
                if path == "/job.json":
                    body = json.dumps(server.job).encode()
                    ctype = "application/json"
                elif path in ("/", "/index.html"):
                    body, ctype = (JS_DIR / "page.html").read_bytes(), "text/html"
                elif path in server.routes:
                    f = server.routes[path]
                    body, ctype = f.read_bytes(), _TYPES.get(f.suffix, "application/octet-stream")
                else:
                    self._headers(404, "text/plain", 0)
                    return
                self._headers(200, ctype, len(body))
                self.wfile.write(body)

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n)
                try:
                    server.result = json.loads(raw)
                except json.JSONDecodeError:
                    server.result = {"error": f"malformed result from the page: {raw[:80]!r}"}
                self._headers(200, "text/plain", 0)
                server.done.set()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


class ChromiumDevice(Device):
    name = "chromium"
    targets = ("wasm32",)

    def __init__(self, arg: str | None = None):
        super().__init__(arg)
        self._browser = {}

    def command(self, artifact: Path, manifest: dict, args: list[str]) -> list[str]:
        """The driver command; run_page fills in the page's URL and a fresh profile folder."""
        return ["node", str(JS_DIR / "chromium_driver.mjs"), "<url>", str(DEFAULT_TIMEOUT_S * 1000), "<user-data-dir>"]

    def install_hint(self) -> str:
        return "install Node.js 20 or newer"

    def run_page(self, job: dict, routes: dict[str, Path], timeout: float) -> dict:
        """Serves `job` to a fresh headless Chromium and returns what the page posted back."""
        if not Path(CHROMIUM).is_file():
            raise EdgesparseError(f"device 'chromium': {CHROMIUM} not found; apt-get install -y chromium")
        check_node_modules("playwright-core")
        routes = {**routes, **{f"/js/{f.name}": f for f in JS_DIR.glob("*.mjs")}}
        profile = tempfile.mkdtemp(prefix="edgesparse-chromium-")
        try:
            with _PageServer(job, routes) as server:
                cmd = ["node", str(JS_DIR / "chromium_driver.mjs"), server.url, str(int(timeout * 1000)), profile]
                try:
                    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
                except FileNotFoundError:
                    raise EdgesparseError(f"device 'chromium': 'node' not found; {self.install_hint()}") from None
                try:
                    stdout, stderr = proc.communicate(timeout=timeout + 60)
                except subprocess.TimeoutExpired:
                    self._stop(proc)
                    raise EdgesparseError(f"device 'chromium': timed out after {timeout:.0f} s") from None
                for line in stdout.splitlines():
                    if line.startswith("browser "):
                        self._browser = {"browser": "Chromium " + line.removeprefix("browser ").strip()}
                result = server.result
                if result is None:
                    detail = failure_detail(proc.returncode, stderr) if proc.returncode else "the page posted no result"
                    raise EdgesparseError(f"device 'chromium': {detail}")
        finally:
            shutil.rmtree(profile, ignore_errors=True)
        if not isinstance(result, dict):
            raise EdgesparseError("device 'chromium': the page posted a malformed result")
        self._browser.update({k: result.get(k) for k in ("user_agent", "cross_origin_isolated", "hardware_concurrency")})
        if result.get("error"):
            raise EdgesparseError(f"device 'chromium': {result['error']}")
        return result

    @staticmethod
    def _stop(proc: subprocess.Popen) -> None:
        """SIGTERM lets playwright close its browser; SIGKILL the driver's process group if that hangs."""
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def run(self, artifact: Path, manifest: dict, args: list[str], timeout: float = DEFAULT_TIMEOUT_S) -> str:
        remote_args, pushes, pulls = split_file_args(args, "/work")
        routes = {"/runner.wasm": artifact / manifest["files"]["runner"]}
        files = {}
        for i, (host, remote) in enumerate(pushes):
            routes[f"/files/{i}"] = Path(host)
            files[remote] = f"/files/{i}"
        job = {"kind": "wasi", "wasm": "/runner.wasm", "args": ["runner", *remote_args], "files": files}
        result = self.run_page(job, routes, timeout)
        try:
            code, stdout, stderr = int(result["exit_code"]), str(result["stdout"]), str(result["stderr"])
            written = {p: base64.b64decode(d) for p, d in result["files"].items()}
        except (KeyError, TypeError, ValueError):
            raise EdgesparseError("device 'chromium': the page posted a malformed result") from None
        if code != 0:
            raise EdgesparseError(f"device 'chromium': {failure_detail(code, stderr)}")
        for remote, host in pulls:
            if remote not in written:
                raise EdgesparseError(f"device 'chromium': the runner wrote no {Path(host).name}")
            Path(host).write_bytes(written[remote])
        return stdout

    def ort_web(self, model: Path, inputs: list[dict], warmup: int, runs: int, timeout: float) -> dict:
        """onnxruntime-web (WASM, 1 thread, SIMD) in the page: {"times_ms", "outputs": [{name, dtype, shape, bytes}]}."""
        check_node_modules("onnxruntime-web")
        dist = JS_DIR / "node_modules" / "onnxruntime-web" / "dist"
        routes = {"/model.onnx": Path(model)}
        routes.update({f"/ort/{f.name}": f for f in dist.iterdir() if f.suffix in (".mjs", ".wasm")})
        job_inputs = []
        for i, spec in enumerate(inputs):
            routes[f"/files/{i}"] = Path(spec["file"])
            job_inputs.append({"name": spec["name"], "dtype": spec["dtype"], "shape": spec["shape"], "url": f"/files/{i}"})
        job = {"kind": "ort", "ort_module": "/ort/ort.wasm.min.mjs", "ort_dir": "/ort/", "model": "/model.onnx",
               "inputs": job_inputs, "warmup": warmup, "runs": runs}
        result = self.run_page(job, routes, timeout)
        try:
            outputs = [{**o, "bytes": base64.b64decode(o["bytes"])} for o in result["outputs"]]
            return {"times_ms": [float(t) for t in result["times_ms"]], "outputs": outputs}
        except (KeyError, TypeError, ValueError):
            raise EdgesparseError("device 'chromium': onnxruntime-web posted a malformed result") from None

    def machine(self) -> dict:
        return dict(self._browser)
