"""Cost model of the layers the sparsify pass may rewrite (1x1 convolutions, fully-connected layers): the
predicted time of the dense kernel and of the f32-spmm kernel on one target, so that `--sparse auto` rewrites
a layer only where sparse is predicted faster.

Both times are linear in a few counts of the work the kernels do, with non-negative coefficients (ms per unit)
fitted to per-kernel times measured on a device (`edgesparse calibrate`, edgesparse/calibrate.py):

    sparse_ms = a * weight_vectors + b * weight_vectors x tile_kib + c * stored_weights + d * activations
                + e * accumulator_round_trips + f
    dense_ms  = f * macs + g * weights + h * outputs + i

* ``weight_vectors``: stored weights x vector accumulators. The spmm kernel walks every stored weight once per
  pixel tile and updates each of the tile's accumulators (whole vectors, then power-of-two pieces below a
  vector: 49 = 3x16 + 1 on AVX-512) with one FMA; the tiles are the kernels' plan (kernels/spmm ``plan_tiles``:
  full tiles of MR, the remainder joined to the last one when the registers allow).
* ``weight_vectors x tile_kib``: the same, times the KiB of the activation tile the nonzeros gather from
  (Cin x the widest tile's row, whole vectors, x 4 bytes). Once the tile outgrows L1 a gather goes to L2: on
  the x86 host (AVX-512, 48 KiB L1D) a 7x7 layer of 1024 input channels (256 KiB tile) costs twice as much per
  FMA as a 56x56 layer of 64 (16 KiB); without this term the fit's rms error was 26%, and the 50-70% sparse
  7x7 layers that run slower sparse than dense were predicted faster. A kernel cut into input-channel chunks
  (kernels/spmm ``spmm_chunk_for``) gathers from one chunk's tile: its KiB count. The tile's width is the
  layer's own (kernels/spmm ``spmm_tiling_for``: some layers take the descriptor's wider ``spmm_mr_wide``).
* ``accumulator_round_trips``: what chunks cost: per pass and output block, every chunk after the first loads
  and stores the block's vector accumulators through the output.
* ``stored_weights``: the packed weights and indices streamed from memory (what a fully-connected layer, one
  scalar FMA per nonzero, is bound by): 21% -> 16% rms error on the x86 host.
* ``activations``: (Cin + Cout) x pixels: the input read once (and copied tile by tile where the kernel packs
  its tiles), the output written once. A 24x144 layer at 56x56 reads 1.8 MB for 346 nonzeros at 90%.
* ``macs`` = Cin x Cout x pixels, ``weights`` = Cin x Cout (a fully-connected layer streams its weights once:
  memory-bound, far slower per MAC than a conv), ``outputs`` = Cout x pixels.

"Stored weights" are what the packer stores: nonzero block columns x block (zeros of partly filled block
columns included). The tiling comes from kernels/spmm (config.py's MR, register budget and input-channel
chunks, ``plan_tiles``), so the graph pass never needs to know the kernels; it asks :meth:`CostModel.predict`.
Coefficients come from the target's calibration in ``$EDGESPARSE_CACHE/cost/<target>.json`` when there is a
readable one, else from the descriptor's ``[sparse_cost]`` (measured on the machine the package was developed
on). Single-threaded kernels.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .cache import cache_root, write_json_atomic

FORMAT = 2  # 2: accumulator_round_trips
SPARSE_TERMS = ("weight_vectors", "weight_vectors_x_tile_kib", "stored_weights", "activations",
                "accumulator_round_trips", "call")
DENSE_TERMS = ("macs", "weights", "outputs", "call")


# ---------------------------------------------------------------- what the model knows of a layer


@dataclass(frozen=True)
class LayerShape:
    """One eligible layer: weight [Cout, Cin], output pixels, nonzeros and what the packer would store."""

    cout: int
    cin: int
    pixels: int  # H*W of the output; 1 for a fully-connected layer
    nonzeros: int
    block: int  # output channels per block of the packed format
    stored_weights: int  # nonzero block columns x block, summed over blocks

    @classmethod
    def from_weight(cls, w: np.ndarray, pixels: int, block: int) -> "LayerShape":
        """The layer of dense weight ``w[Cout, Cin]`` packed with ``block`` (kernels/spmm/pack.py's layout)."""
        return cls(int(w.shape[0]), int(w.shape[1]), int(pixels), int(np.count_nonzero(w)), int(block),
                   stored_weights(w, block))


def stored_weights(w: np.ndarray, block: int) -> int:
    """Weights the packed format stores for ``w[Cout, Cin]``: ``block`` values per stored column, where a full
    block of ``block`` rows stores its nonzero columns and each of the ``Cout % block`` remainder rows (blocks of
    one, padded to ``block`` values per column: kernels/spmm/pack.py) its nonzeros."""
    cout, cin = w.shape
    nfull = cout // block
    nz = w != 0
    columns = int(nz[: nfull * block].reshape(nfull, block, cin).any(axis=1).sum()) if nfull else 0
    return (columns + int(nz[nfull * block:].sum())) * block


@dataclass(frozen=True)
class TileWalk:
    """How the spmm kernel walks a layer's pixels (the kernels' own tile plan, kernels/spmm ``plan_tiles``)."""

    passes: int  # passes over the nonzeros: one per tile
    vectors: int  # vector accumulators updated per nonzero, summed over the passes
    row_floats: int  # floats per input-channel row of the widest tile (whole vectors)


def tile_walk(target, pixels: int, block: int, mr: int, threads: int = 1) -> TileWalk:
    from edgesparse.kernels.spmm import spmm_plan_for
    from edgesparse.kernels.spmm.template import accumulators

    lanes = target.vector_lanes_f32
    plan = spmm_plan_for(target, pixels, block, mr, threads)
    vectors = plan.n_uniform * accumulators(plan.mr, lanes) + sum(accumulators(w, lanes) for _, w in plan.extra)
    return TileWalk(plan.n_uniform + len(plan.extra), vectors, plan.row_stride(lanes))


def sparse_terms(layer: LayerShape, target, threads: int = 1) -> np.ndarray:
    from edgesparse.kernels.spmm import spmm_tiling_for

    tiling = spmm_tiling_for(target, layer.pixels, layer.block, layer.cin, layer.stored_weights / layer.cout,
                             threads, reuse=layer.nonzeros / layer.cin)  # the kernel's tiling, as sparsify takes it
    walk = tile_walk(target, layer.pixels, layer.block, tiling.mr, threads)
    weight_vectors = layer.stored_weights * walk.vectors
    n_chunks = -(-layer.cin // tiling.chunk)
    blocks = layer.cout // layer.block + layer.cout % layer.block
    tile_kib = tiling.chunk * min(walk.row_floats, layer.pixels) * 4 / 1024  # a matvec gathers single floats
    return np.array([weight_vectors, weight_vectors * tile_kib, layer.stored_weights,
                     (layer.cin + layer.cout) * layer.pixels, blocks * (n_chunks - 1) * walk.vectors, 1.0],
                    dtype=np.float64)


def dense_terms(layer: LayerShape, target) -> np.ndarray:
    del target  # the dense kernels' tiles are not modelled: their cost is close to linear in the MACs
    return np.array([layer.cin * layer.cout * layer.pixels, layer.cin * layer.cout, layer.cout * layer.pixels, 1.0],
                    dtype=np.float64)


# ---------------------------------------------------------------- the model


@dataclass(frozen=True)
class Prediction:
    dense_ms: float
    sparse_ms: float

    @property
    def gain(self) -> float:
        """dense / sparse: above 1 the sparse kernel is predicted faster."""
        if self.sparse_ms > 0:
            return self.dense_ms / self.sparse_ms
        return math.inf if self.dense_ms > 0 else 1.0


@dataclass
class CostModel:
    target: object  # edgesparse.targets.Target
    sparse: dict  # {term: ms per unit}, SPARSE_TERMS
    dense: dict  # {term: ms per unit}, DENSE_TERMS
    source: str  # "calibrated" | "default"
    device: str = ""
    date: str = ""
    machine: str = ""
    fit_error: dict = field(default_factory=dict)  # {"sparse": rms relative error, "dense": ...}
    note: str = ""  # why a cached calibration was not used, when it was not

    def predict(self, layer: LayerShape, threads: int = 1) -> Prediction:
        """Predicted kernel times of ``layer``; ``threads`` only as far as it changes the sparse tiling (the
        times are of one thread)."""
        s = float(np.dot([self.sparse.get(t, 0.0) for t in SPARSE_TERMS], sparse_terms(layer, self.target, threads)))
        d = float(np.dot([self.dense.get(t, 0.0) for t in DENSE_TERMS], dense_terms(layer, self.target)))
        return Prediction(dense_ms=d, sparse_ms=s)

    def describe(self) -> str:
        if self.source == "calibrated":
            return f"calibrated on {self.device} {self.date}"
        hint = f"descriptor default: run `edgesparse calibrate --target {self.target.name} " \
               f"--device {calibration_device_hint(self.target)}`"
        return f"{hint} ({self.note})" if self.note else hint

    def as_dict(self) -> dict:
        """What the manifest records (`cost_model`)."""
        return {"source": self.source, "description": self.describe(), "device": self.device, "date": self.date,
                "machine": self.machine, "fit_error": self.fit_error, "sparse": self.sparse, "dense": self.dense}


def calibration_device_hint(target) -> str:
    """A device to calibrate ``target`` on: its default unless that is emulated, else a real one that runs it."""
    from edgesparse.devices import _DEVICES

    if not _DEVICES[target.default_device].emulated:
        return target.default_device
    real = [name for name, cls in _DEVICES.items() if not cls.emulated and target.name in cls.targets]
    return {"ssh": "ssh:user@host"}.get(real[0], real[0]) if real else "<a real device>"


def _checked_terms(d, terms, where: str) -> dict:
    if not isinstance(d, dict) or set(d) != set(terms):
        raise ValueError(f"{where}: needs exactly the terms {', '.join(terms)}")
    out = {}
    for t in terms:
        v = d[t]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise ValueError(f"{where}.{t}: not a non-negative number")
        out[t] = float(v)
    return out


def default_model(target, note: str = "") -> CostModel | None:
    """The descriptor's [sparse_cost] coefficients; None when the descriptor has none."""
    from edgesparse.errors import EdgesparseError

    sc = target.sparse_cost
    if not sc:
        return None
    try:
        sparse = _checked_terms(sc.get("sparse"), SPARSE_TERMS, f"{target.name} [sparse_cost] sparse")
        dense = _checked_terms(sc.get("dense"), DENSE_TERMS, f"{target.name} [sparse_cost] dense")
    except ValueError as exc:
        raise EdgesparseError(f"target descriptor: {exc}") from None
    return CostModel(target, sparse, dense, "default", device=sc.get("device", ""), date=sc.get("date", ""),
                     machine=sc.get("machine", ""), fit_error=dict(sc.get("fit_error", {})), note=note)


# ---------------------------------------------------------------- the calibration cache


def cache_path(target_name: str) -> Path:
    return cache_root() / "cost" / f"{target_name}.json"


def load_cost_model(target, *, cached: bool = True) -> CostModel | None:
    """The target's calibration from the cache (unless not ``cached``), else the descriptor's default, with a
    note saying why when a cache file exists but cannot be used: a broken cache costs the calibration, never a
    compile. None when there is neither."""
    if not cached:
        return default_model(target)
    path = cache_path(target.name)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return default_model(target)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return default_model(target, note=f"{path} is unreadable")
    try:
        if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("target") != target.name:
            raise ValueError("wrong format or target")
        sparse = _checked_terms(data.get("sparse"), SPARSE_TERMS, "sparse")
        dense = _checked_terms(data.get("dense"), DENSE_TERMS, "dense")
    except ValueError as exc:
        return default_model(target, note=f"{path} ignored: {exc}")
    return CostModel(target, sparse, dense, "calibrated", device=str(data.get("device", "")),
                     date=str(data.get("date", "")), machine=str(data.get("machine", "")),
                     fit_error=dict(data.get("fit_error") or {}))


def save_calibration(model: CostModel, extra: dict | None = None) -> Path:
    """Writes the model to the target's cache file (a temporary file renamed into place)."""
    path = cache_path(model.target.name)
    data = {"format": FORMAT, "target": model.target.name, "device": model.device, "date": model.date,
            "machine": model.machine, "sparse": model.sparse, "dense": model.dense, "fit_error": model.fit_error,
            **(extra or {})}
    return write_json_atomic(path, data)


# ---------------------------------------------------------------- fitting


def fit_nonnegative(terms: np.ndarray, measured_ms: np.ndarray) -> tuple[np.ndarray, float]:
    """Coefficients >= 0 minimising the squared *relative* error of ``terms @ coef`` against ``measured_ms``
    (a 0.01 ms layer counts as much as a 1 ms one), and the fit's rms relative error.

    Exact non-negative least squares by trying every subset of terms (there are at most six): the best
    unconstrained fit of a subset whose coefficients are all >= 0 is the answer."""
    a = np.asarray(terms, np.float64)
    y = np.asarray(measured_ms, np.float64)
    assert a.ndim == 2 and a.shape[0] == y.size and (y > 0).all(), (a.shape, y.shape)
    rows = a / y[:, None]  # relative residuals: (a @ c - y) / y = rows @ c - 1
    scale = np.abs(rows).max(axis=0)
    scale[scale == 0] = 1.0
    rows = rows / scale  # conditioning: the terms span ten orders of magnitude
    ones = np.ones(y.size)
    best, best_err = np.zeros(a.shape[1]), math.inf
    for k in range(1, a.shape[1] + 1):
        for subset in itertools.combinations(range(a.shape[1]), k):
            cols = list(subset)
            c, *_ = np.linalg.lstsq(rows[:, cols], ones, rcond=None)
            if (c < 0).any():
                continue
            err = float(np.sum((rows[:, cols] @ c - ones) ** 2))
            if err < best_err:
                best_err = err
                best = np.zeros(a.shape[1])
                best[cols] = c
    coef = best / scale
    return coef, relative_error(a @ coef, y)


def relative_error(predicted, measured) -> float:
    """rms of (predicted - measured) / measured."""
    p, m = np.asarray(predicted, np.float64), np.asarray(measured, np.float64)
    return float(np.sqrt(np.mean(((p - m) / m) ** 2)))
