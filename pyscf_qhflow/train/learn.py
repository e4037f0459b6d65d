"""``qhflow learn``: label a stream of molecules in the background and train on them as they arrive.

A run directory ``OUT`` holds:

* ``OUT/shards/{prefix}_{k:03d}.h5``: the labels, ordinary shards (``FORMAT.md``,
  written by :func:`~pyscf_qhflow.data.label.write_shard`, usable by ``qhflow
  train``), each with the attribute ``molecule_names`` (JSON, the names of its
  records; failed molecules carry theirs in ``failures``), so a restart knows
  which molecules of the stream are done;
* ``OUT/learn.json``: the label protocol, stream and shard prefix of the first
  start; a restart with others is refused;
* ``OUT/state.pt``, ``OUT/best.pt``, ``OUT/log.csv``: the training run of
  :func:`~pyscf_qhflow.train.loop.fit` (resumed from ``state.pt``);
* ``OUT/weights.pt``: the current EMA weights, a checkpoint for ``load_model``
  and ``--init-from`` (written every ``ckpt_minutes`` and at the end); with
  ``label_model='current'`` the labellers start their SCFs from it.

Steps of :func:`learn`:

1. the run file (written or checked); the molecules of ``OUT``'s shards are
   done; the rest of the stream, in its order, less the QM9 indices present
   in the replay and exclude shards, is to label;
2. ``weights.pt`` for the labellers; SIGINT/SIGTERM, ``max_minutes`` and an
   optional ``stop`` event set a stop flag instead of killing the process;
3. :class:`_Labeller`: ``label_jobs`` worker processes label the stream with
   :func:`~pyscf_qhflow.data.label.label_molecule` in the background;
4. the loop: every ``chunk_size`` finished labels are written as a shard
   (:func:`_write_ready_shards`), then the model trains with ``fit`` on the
   replay shards and all of ``OUT``'s shards until the next chunk is ready
   or ``ckpt_minutes`` have passed (after at least ``min_round_steps`` steps),
   the stop flag, or ``cfg.steps``; then ``weights.pt`` is refreshed when
   ``ckpt_minutes`` have passed, and a progress line is printed;
5. at the end or on a stop: the pool is terminated (a molecule being labelled
   is labelled again on restart, never twice in the shards), the finished
   labels are flushed as a last shard and ``weights.pt`` is written.
   ``fit`` has written ``state.pt`` at its last step.

Training uses the train split of :func:`~pyscf_qhflow.data.splits.split_by_qm9_index`
(the test split is never trained on); validation is a fixed set: the
``val`` shards if given, else the validation split of the replay shards, else
the validation split of ``OUT``'s shards (which grows with the stream).
"""
from __future__ import annotations

import concurrent.futures
import copy
import functools
import json
import multiprocessing
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import h5py
import numpy as np
from tqdm.auto import tqdm

from .. import keys
from ..checkpoint import load_training_state, save_checkpoint
from ..data.dataset import ShardDataset
from ..data.label import (MoleculeSpec, _file_token, _finish_shard, _label_task, _worker_init,
                          default_conv_tol, qm9_indices_in_shards, shard_attrs)
from ..data.splits import split_by_qm9_index
from ..fileio import atomic_write_text
from .loop import StopOnSignal, TrainConfig, fit

__all__ = ["LearnConfig", "learn", "names_in_shards"]

NAMES_ATTR = "molecule_names"  # shard attribute: JSON list of the records' names


@dataclass(frozen=True)
class LearnConfig:
    """Options of :func:`learn` besides the training ones (:class:`~.loop.TrainConfig`)."""

    chunk_size: int = 16  # molecules per shard
    label_jobs: int = 1  # labelling worker processes (one PySCF thread each)
    guess: str = "qhflow"  # SCF start of the labels: 'qhflow' (fast labels) or 'minao'
    label_model: str = "current"  # 'current' (OUT/weights.pt), 'default' or a checkpoint
    min_round_steps: int = 20  # training steps before a new shard joins the training set
    max_minutes: float | None = None  # wall-clock limit of this call
    max_cycle: int = 100
    grid_level: int = 3
    prefix: str | None = None  # shard file prefix (default qm9_<xc>_<basis>)
    cache_dir: str | None = None  # H_init cache of replay shards without a stored hinit

    def __post_init__(self):
        if self.chunk_size < 1 or self.label_jobs < 1 or self.min_round_steps < 0:
            raise ValueError("chunk_size and label_jobs must be >= 1, min_round_steps >= 0")
        default_conv_tol(self.guess)  # rejects an unknown guess


# ---------------------------------------------------------------- the shards of a run

def names_in_shards(shard_dir: Path) -> set[str]:
    """Names of the molecules (labelled or failed) in the shards of ``shard_dir``."""
    names: set[str] = set()
    for path in sorted(Path(shard_dir).glob("*.h5")):
        with h5py.File(path, "r") as f:
            names.update(json.loads(f.attrs[NAMES_ATTR]))
            names.update(fail["name"] for fail in json.loads(f.attrs.get("failures", "[]")))
    return names


def _learned_shards(shard_dir: Path) -> list[Path]:
    """The run's shards that hold at least one molecule (a shard of failures holds none)."""
    found = []
    for path in sorted(shard_dir.glob("*.h5")):
        with h5py.File(path, "r") as f:
            if len(f["natoms"]):
                found.append(path)
    return found


def _write_ready_shards(labeller: "_Labeller", shard_dir: Path, prefix: str, attrs: dict,
                        counts: dict, size: int) -> None:
    """Write the finished labels as shards of ``size`` molecules (the last may be smaller
    when the stream is done); ``size=0`` writes every finished label as one shard."""
    while labeller.ready(size or 1):
        results = labeller.take(size or None)
        names = [r["name"] for r in results if "error" not in r]
        k = len(list(shard_dir.glob(f"{prefix}_*.h5")))
        _finish_shard(shard_dir / f"{prefix}_{k:03d}.h5", results,
                      {**attrs, NAMES_ATTR: json.dumps(names)}, counts)


def _check_run_file(path: Path, settings: dict) -> None:
    """Write the run's settings on the first start; refuse a restart with others."""
    if path.exists():
        old = json.loads(path.read_text())
        if old != settings:
            raise ValueError(f"{path.parent} holds a different learn run ({path}: "
                             f"{old} here, {settings} asked); use another --out")
    else:
        atomic_write_text(path, json.dumps(settings, indent=1))


# ---------------------------------------------------------------- background labelling

class _Labeller:
    """Labels ``specs`` in order in a spawned pool of ``jobs`` workers, ``2 * jobs`` in flight.

    Finished results (:func:`~pyscf_qhflow.data.label._label_task` dicts) collect
    in completion order; each finished molecule submits the next.  A worker that
    dies (killed, out of memory) breaks the pool: ``broken`` says why, and the
    molecules in flight stay unlabelled (labelled on restart, never recorded as
    failed).  :meth:`close` ends the workers: what they were labelling is dropped.
    """

    def __init__(self, specs: Sequence[MoleculeSpec], protocol: dict, jobs: int):
        self._todo = list(specs)[::-1]  # popped from the end: stream order
        self._protocol = protocol
        self._lock = threading.Lock()
        self._finished: list[dict] = []
        self._in_flight = 0
        self._closed = False
        self.broken: str | None = None
        self._pool = None
        if self._todo:
            self._pool = concurrent.futures.ProcessPoolExecutor(
                jobs, mp_context=multiprocessing.get_context("spawn"),
                initializer=_worker_init, initargs=(1, True))
            with self._lock:
                for _ in range(2 * jobs):
                    self._submit()

    def _submit(self) -> None:  # with the lock held
        if self._closed or self.broken or not self._todo:
            return
        spec = self._todo.pop()
        self._in_flight += 1
        future = self._pool.submit(_label_task, spec, self._protocol, True)
        future.add_done_callback(functools.partial(self._done, spec))

    def _done(self, spec: MoleculeSpec, future: concurrent.futures.Future) -> None:
        with self._lock:
            if future.cancelled() or self._closed:
                return  # still counted in flight: left for a restart
            err = future.exception()
            if isinstance(err, concurrent.futures.BrokenExecutor):
                self.broken = str(err) or type(err).__name__
                return
            self._in_flight -= 1
            self._finished.append(future.result() if err is None else {
                "name": spec.name, keys.QM9_INDEX: spec.qm9_index,
                "error": f"{type(err).__name__}: {err}"[:500]})
            self._submit()

    def ready(self, n: int) -> bool:
        """``n`` labels finished, or the last ones of the stream."""
        with self._lock:
            left = len(self._todo) + self._in_flight
            return len(self._finished) >= n or (left == 0 and bool(self._finished))

    def take(self, n: int | None) -> list[dict]:
        """The first ``n`` (None: all) finished labels, removed from the buffer."""
        with self._lock:
            n = len(self._finished) if n is None else n
            out, self._finished = self._finished[:n], self._finished[n:]
            return out

    @property
    def remaining(self) -> int:
        """Molecules not finished yet (queued or being labelled)."""
        with self._lock:
            return len(self._todo) + self._in_flight

    @property
    def finished(self) -> int:
        with self._lock:
            return len(self._finished)

    def close(self) -> None:
        """Cancel what is queued and end the workers now (``terminate_workers`` from 3.14)."""
        with self._lock:
            self._closed = True
        if self._pool is None:
            return
        procs = list(getattr(self._pool, "_processes", {}).values())
        self._pool.shutdown(wait=False, cancel_futures=True)
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.join()
        self._pool = None

    def __enter__(self) -> "_Labeller":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---------------------------------------------------------------- stopping

class _StopFlag(StopOnSignal):
    """:class:`~pyscf_qhflow.train.loop.StopOnSignal`, set too by ``stop`` or the deadline."""

    def __init__(self, deadline: float | None, event: threading.Event | None):
        super().__init__("stopping; finished labels go into a shard, the training state "
                         "into state.pt")
        self._deadline, self._event = deadline, event

    def __bool__(self) -> bool:
        if self.reason is None and self._event is not None and self._event.is_set():
            self._set("stop requested")
        if self.reason is None and self._deadline is not None and time.monotonic() > self._deadline:
            self._set("--max-minutes reached")
        return self.reason is not None


# ---------------------------------------------------------------- training data and weights

def _datasets(model, replay: Sequence[str], shard_dir: Path, val: Sequence[str],
              cache_dir: str | None):
    """(train set, train indices, validation set, validation indices), or None while
    there is nothing to train on."""
    learned = [str(p) for p in _learned_shards(shard_dir)]
    if not replay and not learned:
        return None
    proto = model.config.protocol
    kw = dict(xc=proto.xc, basis=proto.basis, with_hinit=True, with_overlap=True,
              cache_dir=cache_dir)
    data = ShardDataset([*replay, *learned], **kw)
    train_idx, val_idx, _ = split_by_qm9_index(data)
    if val:
        val_set = ShardDataset(list(val), **kw)
        val_idx = np.arange(len(val_set))
        held = set(val_set.qm9_index.tolist()) - {-1}  # never train on a validation molecule
        train_idx = train_idx[~np.isin(data.qm9_index[train_idx], list(held))]
    elif replay:
        val_set = ShardDataset(list(replay), **kw)
        val_idx = split_by_qm9_index(val_set)[1]
    else:
        val_set = data
    if len(train_idx) == 0:
        return None
    return data, train_idx, val_set, val_idx


def _saved_step(out: Path) -> int:
    path = out / "state.pt"
    return int(load_training_state(path)["step"]) if path.exists() else 0


def _write_weights(out: Path, model, card: dict) -> None:
    """``OUT/weights.pt``: the EMA weights of ``state.pt`` (the model itself before any)."""
    weights, steps = model, 0
    if (out / "state.pt").exists():
        state = load_training_state(out / "state.pt")
        weights = copy.deepcopy(model)
        weights.load_state_dict(state["ema"]["module"])
        steps = int(state["step"])
    save_checkpoint(out / "weights.pt", weights, {**card, "steps": steps})


def _label_protocol(model, lcfg: LearnConfig, out: Path) -> dict:
    """Keyword arguments of ``label_molecule`` (the model's functional and basis)."""
    conv_tol, conv_tol_grad = default_conv_tol(lcfg.guess)
    label_model = None
    if lcfg.guess == "qhflow":
        label_model = (str(out / "weights.pt") if lcfg.label_model == "current"
                       else lcfg.label_model)
    proto = model.config.protocol
    return {"xc": proto.xc, "basis": proto.basis, "grid_level": lcfg.grid_level,
            "conv_tol": conv_tol, "conv_tol_grad": conv_tol_grad, "max_cycle": lcfg.max_cycle,
            "guess": lcfg.guess, "model": label_model}


# ---------------------------------------------------------------- the command

def learn(stream: Sequence[MoleculeSpec], out_dir, model, cfg: TrainConfig,
          lcfg: LearnConfig = LearnConfig(), replay: Sequence[str] = (),
          exclude: Sequence[str] = (), val: Sequence[str] = (), stream_info: dict | None = None,
          card: dict | None = None, stop: threading.Event | None = None,
          on_round: Callable[[dict], None] | None = None) -> dict:
    """Label ``stream`` into ``out_dir/shards`` and train ``model`` on it as it arrives.

    ``replay``/``exclude``/``val``: shard sources (directories, globs, files);
    replay shards are trained on too, ``val`` is a fixed validation set (default:
    see the module docstring), and QM9 molecules in any of them are never labelled
    (nor, for ``val``, trained on).
    ``stream_info``: what the stream is (JSON), pinned in ``learn.json``.
    ``stop``: an event that stops the run like a signal; ``on_round(status)``
    is called after each training round with the progress dict.
    ``cfg.max_minutes`` is ignored (``lcfg.max_minutes`` bounds the whole call).
    Returns counts: ``labelled``, ``failed``, ``unconverged``, ``shards_written``,
    ``remaining`` (molecules left for a restart), ``step``, ``stopped`` (the reason or None).
    Steps: see the module docstring.
    """
    out = Path(out_dir)
    shard_dir = out / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    cfg = replace(cfg, max_minutes=None)
    protocol = _label_protocol(model, lcfg, out)
    prefix = lcfg.prefix or f"qm9_{_file_token(protocol['xc'])}_{_file_token(protocol['basis'])}"
    settings = {k: v for k, v in protocol.items() if k != "model"}
    _check_run_file(out / "learn.json", {"protocol": settings, "label_model": lcfg.label_model,
                                         "stream": stream_info or {}, "prefix": prefix})
    # 1. what is left of the stream
    if len({s.name for s in stream}) != len(stream):
        raise ValueError("molecule names in the stream must be unique (they mark what is "
                         "labelled)")
    done = names_in_shards(shard_dir)
    sources = [*replay, *exclude, *val]
    skip = qm9_indices_in_shards(sources) if sources else set()
    todo = [s for s in stream if s.name not in done and not (s.qm9_index >= 0 and
                                                             s.qm9_index in skip)]
    n_done = sum(s.name in done for s in stream)
    print(f"qhflow learn: {len(stream)} molecules in the stream, {n_done} labelled "
          f"before, {len(stream) - n_done - len(todo)} in the replay/exclude/val shards, "
          f"{len(todo)} to label with {lcfg.label_jobs} worker(s)", flush=True)
    attrs = shard_attrs(protocol["xc"], protocol["basis"], lcfg.grid_level, protocol["conv_tol"],
                        (stream_info or {}).get("source", "qhflow learn"), lcfg.guess,
                        protocol["conv_tol_grad"])
    card = {**(card or {}), "data": {"learn_run": str(out), "replay": list(replay)},
            "learn": asdict(lcfg)}
    counts = {"shards_written": 0, "shards_skipped": 0, "labelled": 0, "failed": 0,
              "unconverged": 0}
    # 2. the labellers' weights and the stop flag
    if not (out / "weights.pt").exists():
        _write_weights(out, model, card)
    deadline = None if lcfg.max_minutes is None else time.monotonic() + 60.0 * lcfg.max_minutes
    status: dict = {}
    with _StopFlag(deadline, stop) as stopped, _Labeller(todo, protocol, lcfg.label_jobs) as lab:
        try:
            step, last_weights = _saved_step(out), time.monotonic()
            while not _halt(stopped, lab):
                # 4. shards of the finished labels, then a round of training
                _write_ready_shards(lab, shard_dir, prefix, attrs, counts, lcfg.chunk_size)
                data = (_datasets(model, replay, shard_dir, val, lcfg.cache_dir)
                        if step < cfg.steps else None)
                if data is None:  # nothing (more) to train on: wait for labels
                    if lab.remaining == 0 and lab.finished == 0:
                        if step < cfg.steps:
                            print("qhflow learn: the stream is labelled and no molecule is in "
                                  "the train split (split_by_qm9_index, ~80% of molecules): "
                                  "nothing to train on", flush=True)
                        break
                    while not (_halt(stopped, lab) or lab.ready(lcfg.chunk_size)
                               or lab.remaining == 0):
                        time.sleep(0.2)
                    continue
                train_set, train_idx, val_set, val_idx = data
                step0 = step

                def round_over(at: int) -> bool:  # asked by fit after each step
                    return _halt(stopped, lab) or (
                        at - step0 >= lcfg.min_round_steps
                        and (lab.ready(lcfg.chunk_size)
                             or time.monotonic() - last_weights > 60.0 * cfg.ckpt_minutes))

                summary = fit(model, train_set, val_set, out, cfg,
                              resume=(out / "state.pt").exists(), card=card,
                              train_indices=train_idx, val_indices=val_idx,
                              stop_when=round_over)
                step = summary["step"]
                if time.monotonic() - last_weights > 60.0 * cfg.ckpt_minutes:
                    _write_weights(out, model, card)
                    last_weights = time.monotonic()
                status = {"labelled": counts["labelled"], "failed": counts["failed"],
                          "to_label": lab.remaining + lab.finished, "step": step,
                          "loss": summary["history"][-1][1] if summary["history"] else None,
                          "val_mae_uha": summary["final_val_mae_uha"],
                          "train_molecules": len(train_idx)}
                _print_status(status, len(list(shard_dir.glob("*.h5"))))
                if on_round is not None:
                    on_round(status)
        finally:
            # 5. nothing finished is lost: the workers end, their finished labels are kept
            lab.close()
            _write_ready_shards(lab, shard_dir, prefix, attrs, counts, 0)
            remaining = lab.remaining
            _write_weights(out, model, card)
    return {**{k: counts[k] for k in ("labelled", "failed", "unconverged", "shards_written")},
            "remaining": remaining, "step": _saved_step(out), "stopped": stopped.reason}


def _halt(stopped: _StopFlag, lab: _Labeller) -> bool:
    """The stop flag, set too when the labelling workers died."""
    if lab.broken and not stopped:
        stopped._set(f"the labelling workers died ({lab.broken}); the restart labels "
                     "what they held")
    return bool(stopped)


def _print_status(status: dict, n_shards: int) -> None:
    loss = "-" if status["loss"] is None else f"{status['loss']:.3e}"
    val = status["val_mae_uha"]
    val = "-" if val != val else f"{val:.1f} µHa"  # NaN: no validation set
    tqdm.write(f"qhflow learn: labelled {status['labelled']} this run ({status['failed']} "
               f"failed, {status['to_label']} to go; {n_shards} shards) | step "
               f"{status['step']} on {status['train_molecules']} molecules | loss {loss} | "
               f"val H MAE {val}")

