// A minimal WASI (preview1) host for running an edgesparse runner.wasm where node:wasi does not exist (a browser
// page). It provides exactly what the runner imports: arguments, clocks, stdout/stderr captured as text, and an
// in-memory file system under one preopened directory "/" (input files given up front, output files collected).
//
//   const r = await runWasi(wasmBytes, ['runner', 'bench', '3', '10', '1', '/in/0.bin'], {'/in/0.bin': bytes});
//   r.exitCode, r.stdout, r.stderr, r.files ({path: Uint8Array} of every file the runner wrote)

const ERRNO = { success: 0, badf: 8, inval: 28, isdir: 31, noent: 44, nosys: 52 };
const FILETYPE = { character_device: 2, directory: 3, regular_file: 4 };
const O_CREAT = 1, O_DIRECTORY = 2, O_EXCL = 4, O_TRUNC = 8;
const PREOPEN_FD = 3;

class ProcExit extends Error {
  constructor(code) {
    super(`proc_exit(${code})`);
    this.code = code;
  }
}

export async function runWasi(wasmBytes, args, inputFiles = {}) {
  const files = new Map(Object.entries(inputFiles).map(([p, d]) => [p, new Uint8Array(d)]));
  const written = new Set();
  const fds = new Map(); // fd -> {path, pos}
  let nextFd = PREOPEN_FD + 1;
  let stdout = '', stderr = '';
  const decoder = new TextDecoder();
  const encoder = new TextEncoder();
  const argBytes = args.map((a) => encoder.encode(a + '\0'));
  let memory = null;
  const view = () => new DataView(memory.buffer);
  const bytes = () => new Uint8Array(memory.buffer);
  const readString = (ptr, len) => decoder.decode(bytes().slice(ptr, ptr + len));
  const iovecs = (ptr, count) => {
    const out = [];
    for (let i = 0; i < count; ++i) out.push([view().getUint32(ptr + 8 * i, true), view().getUint32(ptr + 8 * i + 4, true)]);
    return out;
  };
  const nowNs = (id) => BigInt(Math.round((id === 0 ? Date.now() : performance.now()) * 1e6));

  const wasi = {
    args_sizes_get(argcPtr, bufSizePtr) {
      view().setUint32(argcPtr, argBytes.length, true);
      view().setUint32(bufSizePtr, argBytes.reduce((n, b) => n + b.length, 0), true);
      return ERRNO.success;
    },
    args_get(argvPtr, bufPtr) {
      for (const [i, b] of argBytes.entries()) {
        view().setUint32(argvPtr + 4 * i, bufPtr, true);
        bytes().set(b, bufPtr);
        bufPtr += b.length;
      }
      return ERRNO.success;
    },
    clock_time_get(id, _precision, timePtr) {
      view().setBigUint64(timePtr, nowNs(id), true);
      return ERRNO.success;
    },
    fd_fdstat_get(fd, ptr) {
      const type = fd <= 2 ? FILETYPE.character_device : fd === PREOPEN_FD ? FILETYPE.directory
        : fds.has(fd) ? FILETYPE.regular_file : 0;
      if (!type) return ERRNO.badf;
      bytes().fill(0, ptr, ptr + 24);
      view().setUint8(ptr, type);
      view().setBigUint64(ptr + 8, 0xffffffffffffffffn, true);
      view().setBigUint64(ptr + 16, 0xffffffffffffffffn, true);
      return ERRNO.success;
    },
    fd_fdstat_set_flags() {
      return ERRNO.success;
    },
    fd_prestat_get(fd, ptr) {
      if (fd !== PREOPEN_FD) return ERRNO.badf;
      view().setUint8(ptr, 0); // a directory
      view().setUint32(ptr + 4, 1, true); // its name, "/", is one byte
      return ERRNO.success;
    },
    fd_prestat_dir_name(fd, ptr, len) {
      if (fd !== PREOPEN_FD) return ERRNO.badf;
      if (len >= 1) view().setUint8(ptr, 0x2f);
      return ERRNO.success;
    },
    path_open(dirFd, _dirFlags, pathPtr, pathLen, oflags, _rightsBase, _rightsInh, _fdFlags, fdPtr) {
      if (dirFd !== PREOPEN_FD) return ERRNO.badf;
      const path = '/' + readString(pathPtr, pathLen).replace(/^\/+/, '');
      if (oflags & O_DIRECTORY) return ERRNO.nosys;
      if (!files.has(path)) {
        if (!(oflags & O_CREAT)) return ERRNO.noent;
        files.set(path, new Uint8Array(0));
      } else if (oflags & O_EXCL) {
        return ERRNO.inval;
      }
      if (oflags & O_TRUNC) files.set(path, new Uint8Array(0));
      if (oflags & (O_CREAT | O_TRUNC)) written.add(path);
      const fd = nextFd++;
      fds.set(fd, { path, pos: 0 });
      view().setUint32(fdPtr, fd, true);
      return ERRNO.success;
    },
    fd_read(fd, iovsPtr, iovsLen, nreadPtr) {
      const f = fds.get(fd);
      if (!f) return fd === 0 ? (view().setUint32(nreadPtr, 0, true), ERRNO.success) : ERRNO.badf;
      const data = files.get(f.path);
      let n = 0;
      for (const [ptr, len] of iovecs(iovsPtr, iovsLen)) {
        const chunk = data.subarray(f.pos, Math.min(data.length, f.pos + len));
        bytes().set(chunk, ptr);
        f.pos += chunk.length;
        n += chunk.length;
        if (chunk.length < len) break;
      }
      view().setUint32(nreadPtr, n, true);
      return ERRNO.success;
    },
    fd_write(fd, iovsPtr, iovsLen, nwrittenPtr) {
      let n = 0;
      for (const [ptr, len] of iovecs(iovsPtr, iovsLen)) {
        const chunk = bytes().slice(ptr, ptr + len);
        n += len;
        if (fd === 1) stdout += decoder.decode(chunk);
        else if (fd === 2) stderr += decoder.decode(chunk);
        else {
          const f = fds.get(fd);
          if (!f) return ERRNO.badf;
          let data = files.get(f.path);
          if (f.pos + len > data.length) {
            const grown = new Uint8Array(Math.max(f.pos + len, data.length * 2));
            grown.set(data);
            data = grown;
            files.set(f.path, data);
            f.size = Math.max(f.size || 0, f.pos + len);
          }
          data.set(chunk, f.pos);
          f.pos += len;
          f.size = Math.max(f.size || 0, f.pos);
          written.add(f.path);
        }
      }
      view().setUint32(nwrittenPtr, n, true);
      return ERRNO.success;
    },
    fd_seek(fd, offset, whence, newOffsetPtr) {
      const f = fds.get(fd);
      if (!f) return ERRNO.badf;
      const size = f.size ?? files.get(f.path).length;
      const base = whence === 0 ? 0 : whence === 1 ? f.pos : size;
      const pos = base + Number(offset);
      if (pos < 0) return ERRNO.inval;
      f.pos = pos;
      view().setBigUint64(newOffsetPtr, BigInt(pos), true);
      return ERRNO.success;
    },
    fd_close(fd) {
      const f = fds.get(fd);
      if (!f) return ERRNO.badf;
      if (f.size !== undefined) files.set(f.path, files.get(f.path).slice(0, f.size));
      fds.delete(fd);
      return ERRNO.success;
    },
    proc_exit(code) {
      throw new ProcExit(code);
    },
  };
  // Anything else the module imports fails loudly rather than silently.
  const imports = new Proxy(wasi, {
    get: (target, name) => target[name] ?? (() => { throw new Error(`WASI function ${String(name)} is not provided`); }),
  });

  const { instance } = await WebAssembly.instantiate(wasmBytes, { wasi_snapshot_preview1: imports });
  memory = instance.exports.memory;
  let exitCode = 0;
  try {
    instance.exports._start();
  } catch (e) {
    if (e instanceof ProcExit) exitCode = e.code;
    else {
      stderr += `error: runner trapped: ${e.message}\n`;
      exitCode = 134;
    }
  }
  for (const f of fds.values()) if (f.size !== undefined) files.set(f.path, files.get(f.path).slice(0, f.size));
  const out = {};
  for (const p of written) out[p] = files.get(p);
  return { exitCode, stdout, stderr, files: out };
}
