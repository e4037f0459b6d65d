"""The training loop: flow matching on residual blocks, AdamW, EMA, validation, resume.

:func:`fit` trains a :class:`~pyscf_qhflow.model.QHFlowModel` on any indexable
set of records (:mod:`pyscf_qhflow.keys`; e.g.
:class:`~pyscf_qhflow.data.dataset.ShardDataset` with ``with_hinit=True,
with_overlap=True``).  Each record is cut into blocks once and kept in memory
(:class:`BlockCache`).  One step:

1. the batch's target residual ``H_1 = F* - H_init`` (blocks),
2. ``H_0`` from the prior, ``t`` per molecule, ``H_t`` (:mod:`pyscf_qhflow.flow`),
3. the network predicts ``H_1`` from ``H_t``; loss :mod:`pyscf_qhflow.train.loss`,
4. AdamW step (gradient clipping; linear warm-up then cosine decay), EMA update.

Every ``val_every`` steps the EMA weights are scored on the validation set
with the flow sampler at K = ``flow.num_steps`` (H MAE in micro-Hartree; with
``val_metric='density'`` also the error of the guess density, which then
picks the best); the best are written with
:func:`~pyscf_qhflow.checkpoint.save_checkpoint` to ``out_dir/best.pt``.
``out_dir/state.pt`` (model, EMA, optimizer, scheduler, step) is written
every ``ckpt_minutes`` and at the end; ``resume=True`` continues from it
exactly on every rank: all randomness is a function of the step (epoch
permutations seeded by ``seed + epoch``; the flow's prior and time draws by
``(seed, step, rank)``), so the RNG state is the step itself.
``out_dir/log.csv`` logs step, time, lr, train loss and the validation scores.

Distributed: with ``WORLD_SIZE > 1`` (set by ``torchrun``) the process group
is initialised from the environment, each rank takes its share of every
epoch's permutation (``DistributedSampler``) and the model is wrapped in
``DistributedDataParallel``; only rank 0 validates and writes files.
"""
from __future__ import annotations

import copy
import csv
import math
import os
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import keys
from ..config import reject_unknown_keys
from ..batching import MolBlocks, block_masks, collate, prepare_record
from ..blocks import assemble_blocks
from ..checkpoint import (load_training_state, save_checkpoint, save_training_state)
from ..flow import interpolate, sample_prior, sample_time
from ..units import HARTREE_TO_UHA
from .loss import (density_response_data, hamiltonian_loss, linear_density_error,
                   lowdin_orthogonalizer, occupied_eigenvalue_loss)

__all__ = ["TrainConfig", "BlockCache", "EMA", "lr_factor", "training_step", "evaluate",
           "evaluate_density_error", "choose_num_steps", "fit", "LOG_FIELDS"]

LOG_FIELDS = ["step", "time_s", "lr", "train_loss", "train_mae_uha", "val_mae_uha",
              "val_density_err"]


@dataclass(frozen=True)
class TrainConfig:
    """Training options (unknown keys rejected by :meth:`from_dict`)."""

    steps: int = 100_000
    batch_size: int = 8
    lr: float = 5e-4
    weight_decay: float = 0.0
    warmup_steps: int = 1000
    min_lr_ratio: float = 0.01  # cosine decays to lr * min_lr_ratio
    grad_clip: float = 10.0  # max gradient norm
    ema_decay: float = 0.999
    mae_weight: float = 1.0
    mse_weight: float = 1.0
    eig_weight: float = 0.0  # occupied-eigenvalue MAE term (Hartree); 0 = off
    density_weight: float = 0.0  # first-order guess-density error term (electrons); 0 = off
    val_metric: str = "h_mae"  # validation score that picks best.pt: 'h_mae' or 'density'
    val_every: int = 1000
    val_batch_size: int = 8
    val_max_molecules: int | None = None
    log_every: int = 10
    ckpt_minutes: float = 30.0
    max_minutes: float | None = None
    float64: bool = False
    seed: int = 0
    num_threads: int | None = 2  # torch CPU threads (None: leave torch's default)
    device: str | None = None  # None: CUDA when available, else CPU (torchrun: the local GPU)
    progress: bool = True
    choose_num_steps: tuple[int, ...] = ()  # candidate K: pick the best on validation at the end

    def __post_init__(self):
        if self.val_metric not in ("h_mae", "density"):
            raise ValueError(f"val_metric must be 'h_mae' or 'density', got {self.val_metric!r}")
        if self.eig_weight < 0 or self.density_weight < 0:
            raise ValueError("eig_weight and density_weight must be >= 0")
        if self.choose_num_steps and self.val_metric != "h_mae":
            raise ValueError("choose_num_steps scores K by H MAE; it needs val_metric='h_mae'")

    @property
    def needs_dense(self) -> bool:
        """Whether the loss or the validation needs dense per-molecule matrices."""
        return self.eig_weight > 0 or self.density_weight > 0 or self.val_metric == "density"

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        reject_unknown_keys(cls, d, "the training options")
        d = dict(d)
        if "choose_num_steps" in d:
            d["choose_num_steps"] = tuple(int(k) for k in d["choose_num_steps"])
        return cls(**d)


class BlockCache:
    """Records of ``dataset`` at ``indices`` cut into blocks once and kept in memory.

    With ``dense=True`` it also keeps dense H_init, F* and S (PySCF order) and
    the occupied count, and builds on first use what the eigenvalue loss
    (S^(-1/2)) and the density loss (:func:`~.loss.density_response_data`,
    with the overlap damping ``tau``) need.

    Memory: blocks are float64, about 2 x (natm + npair) x P^2 x 8 bytes per
    molecule (~1 MB for an 18-atom QM9 molecule with every pair listed).
    """

    def __init__(self, dataset, indices, basis_layout, cutoff: float, pair_cutoff: float,
                 dense: bool = False, tau: float = 0.0):
        self.dataset = dataset
        self.indices = np.asarray(indices, dtype=np.int64)
        self.basis_layout, self.cutoff, self.pair_cutoff = basis_layout, cutoff, pair_cutoff
        self.dense, self.tau = dense, float(tau)
        self._blocks: dict[int, MolBlocks] = {}
        self._dense: dict[int, dict] = {}

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> MolBlocks:
        if i not in self._blocks:
            rec = self.dataset[int(self.indices[i])]
            if keys.FOCK not in rec:
                raise KeyError("training records need a 'fock' (the target Fock matrix)")
            self._blocks[i] = prepare_record(rec, self.basis_layout, self.cutoff,
                                             self.pair_cutoff)
            if self.dense:
                self._dense[i] = {keys.HINIT: rec[keys.HINIT], keys.FOCK: rec[keys.FOCK],
                                  keys.OVERLAP: rec[keys.OVERLAP],
                                  "nocc": int(np.sum(rec[keys.Z])) // 2}
        return self._blocks[i]

    def dense_data(self, i: int, need: tuple[str, ...] = ()) -> dict:
        """Dense matrices of molecule ``i``; ``need`` may ask for 'x' (S^-1/2) and
        'density' (:func:`~.loss.density_response_data`), built once."""
        self[i]
        d = self._dense[i]
        if "x" in need and "x" not in d:
            d["x"] = lowdin_orthogonalizer(d[keys.OVERLAP])
        if "density" in need and "density" not in d:
            d["density"] = density_response_data(d[keys.FOCK], d[keys.HINIT],
                                                  d[keys.OVERLAP], d["nocc"], self.tau)
        return d


class EMA:
    """Exponential moving average of a model's weights (a full copy in ``.module``).

    Effective decay ``min(decay, (1 + n) / (10 + n))`` after n updates, so
    early averages are not dominated by the random initialisation.
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = float(decay)
        self.num_updates = 0

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.num_updates += 1
        d = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        ema_p = list(self.module.parameters())
        torch._foreach_lerp_(ema_p, [p.detach() for p in model.parameters()], 1.0 - d)
        for b_ema, b in zip(self.module.buffers(), model.buffers()):
            b_ema.copy_(b)

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "num_updates": self.num_updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.num_updates = int(state["num_updates"])


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up over ``warmup_steps``, then cosine decay to ``min_lr_ratio``."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def _targets(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Residual blocks H_1 = F* - H_init: (onsite [N, P, P], offsite [K, P, P])."""
    return batch[keys.RESIDUAL_ONSITE], batch[keys.RESIDUAL_OFFSITE]


def training_step(model, batch: dict, flow_cfg, irreps_block: str, cfg: TrainConfig,
                  generator: torch.Generator | None = None, dense: list[dict] | None = None,
                  info=None) -> tuple[torch.Tensor, dict]:
    """Loss of one batch under flow matching (no optimizer step).

    ``model`` is called as ``model(batch) -> (onsite, offsite)``.  ``dense``/``info``
    (per-molecule dense data and :class:`~pyscf_qhflow.batching.BatchInfo`)
    are needed only when ``cfg.eig_weight > 0`` or ``cfg.density_weight > 0``.
    """
    x1 = _targets(batch)
    mask, pairs = batch[keys.SLOT_MASK], batch[keys.PAIR_INDEX]
    nmol = int(batch[keys.T].shape[0])
    dtype = x1[0].dtype
    t = sample_time(nmol, flow_cfg, generator, dtype).to(x1[0].device)  # [B]
    if flow_cfg.objective == "regression":
        xt = (torch.zeros_like(x1[0]), torch.zeros_like(x1[1]))
    else:
        x0 = sample_prior(mask.cpu(), pairs.cpu(), irreps_block, flow_cfg.prior_scale,
                          generator, dtype)
        x0 = (x0[0].to(x1[0].device), x0[1].to(x1[0].device))
        xt = interpolate(x0, x1, t, batch[keys.BATCH], pairs)
    pred = model({**batch, keys.XT_ONSITE: xt[0], keys.XT_OFFSITE: xt[1], keys.T: t})
    loss, metrics = hamiltonian_loss(pred, x1, mask, pairs, cfg.mae_weight, cfg.mse_weight)
    if cfg.eig_weight > 0 or cfg.density_weight > 0:
        if dense is None or info is None:
            raise ValueError("eig_weight > 0 or density_weight > 0 needs the dense data "
                             "of the batch")
        residuals = [assemble_blocks(pred[0][sa], pred[1][sp], lay, p)  # [nao, nao]
                     for lay, p, sa, sp in zip(info.layouts, info.pairs, info.atom_slices,
                                               info.pair_slices)]
    if cfg.eig_weight > 0:
        f_pred, f_ref, xs, nocc = [], [], [], []
        for d, r in zip(dense, residuals):
            f_pred.append(torch.as_tensor(d[keys.HINIT], dtype=dtype, device=r.device) + r)
            f_ref.append(torch.as_tensor(d[keys.FOCK], dtype=dtype, device=r.device))
            xs.append(torch.as_tensor(d["x"], dtype=dtype, device=r.device))
            nocc.append(d["nocc"])
        eig = occupied_eigenvalue_loss(f_pred, f_ref, xs, nocc)
        loss = loss + cfg.eig_weight * eig
        metrics["eig_mae"] = float(eig.detach())
    if cfg.density_weight > 0:
        dens = linear_density_error(residuals, [d["density"] for d in dense])
        loss = loss + cfg.density_weight * dens
        metrics["density_err"] = float(dens.detach())
    metrics["loss"] = float(loss.detach())
    return loss, metrics


@torch.no_grad()
def evaluate(model, cache: BlockCache, batch_size: int = 8, num_steps: int | None = None,
             max_molecules: int | None = None) -> float:
    """H MAE (micro-Hartree) of the flow sampler over the real block entries of ``cache``."""
    n = len(cache) if max_molecules is None else min(len(cache), max_molecules)
    if n == 0:
        return float("nan")
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for start in range(0, n, batch_size):
            batch, _ = collate([cache[i] for i in range(start, min(n, start + batch_size))],
                               model.dtype, model.device)
            pred = model.sample(batch, num_steps=num_steps)
            m_on, m_off = block_masks(batch[keys.SLOT_MASK], batch[keys.PAIR_INDEX])
            x1 = _targets(batch)
            total += float((pred[0] - x1[0])[m_on].abs().sum() +
                           (pred[1] - x1[1])[m_off].abs().sum())
            count += int(m_on.sum() + m_off.sum())
    finally:
        model.train(was_training)
    return total / count * HARTREE_TO_UHA


@torch.no_grad()
def evaluate_density_error(model, cache: BlockCache, batch_size: int = 8,
                           num_steps: int | None = None,
                           max_molecules: int | None = None) -> float:
    """Mean error of the guess density over ``cache`` (electrons; needs ``dense=True``).

    The prediction is assembled as at inference, ``F = H_init + W R W`` with the
    cache's overlap damping ``tau`` (gap guard and distance switch aside), and
    scored by the exact ``density_err`` of :func:`pyscf_qhflow.benchmark.fock_metrics`.
    """
    from ..benchmark import fock_metrics
    from ..guess.overlap_damping import damp_residual

    if not cache.dense:
        raise ValueError("evaluate_density_error needs a BlockCache with dense=True")
    n = len(cache) if max_molecules is None else min(len(cache), max_molecules)
    if n == 0:
        return float("nan")
    was_training = model.training
    model.eval()
    errors = []
    try:
        for start in range(0, n, batch_size):
            ids = list(range(start, min(n, start + batch_size)))
            batch, info = collate([cache[i] for i in ids], model.dtype, model.device)
            on, off = model.sample(batch, num_steps=num_steps)
            for i, lay, p, sa, sp in zip(ids, info.layouts, info.pairs, info.atom_slices,
                                         info.pair_slices):
                d = cache.dense_data(i)
                r = assemble_blocks(on[sa].double().cpu().numpy(),
                                    off[sp].double().cpu().numpy(), lay, p)
                f = d[keys.HINIT] + damp_residual(r, d[keys.OVERLAP], cache.tau)
                errors.append(fock_metrics(f, d[keys.FOCK], d[keys.OVERLAP],
                                           d["nocc"])["density_err"])
    finally:
        model.train(was_training)
    return float(np.mean(errors))


def choose_num_steps(model, cache: BlockCache, candidates, batch_size: int = 8,
                     max_molecules: int | None = None) -> tuple[int, dict[int, float]]:
    """The number of Euler steps K with the lowest validation H MAE.

    Returns ``(best K, {K: MAE in micro-Hartree})``; ties go to the smaller K.
    """
    scores = {int(k): evaluate(model, cache, batch_size, int(k), max_molecules)
              for k in sorted(set(candidates))}
    best = min(scores, key=lambda k: (scores[k], k))
    return best, scores


# ---------------------------------------------------------------------- distributed

def _dist_env() -> tuple[bool, int, int]:
    """(distributed, rank, world size) from torchrun's environment variables."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return False, 0, 1
    return True, int(os.environ.get("RANK", "0")), world


def _init_distributed() -> torch.device:
    import torch.distributed as dist
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        dist.init_process_group("nccl")
        return torch.device("cuda", local)
    dist.init_process_group("gloo")
    return torch.device("cpu")


def _epoch_order(n: int, epoch: int, seed: int, distributed: bool, rank: int,
                 world: int) -> np.ndarray:
    """This rank's permutation of ``range(n)`` for ``epoch`` (a function of seed and epoch)."""
    if distributed:
        from torch.utils.data import DistributedSampler
        sampler = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=True,
                                     seed=seed, drop_last=True)
        sampler.set_epoch(epoch)
        return np.fromiter(iter(sampler), dtype=np.int64)
    gen = torch.Generator().manual_seed(seed + epoch)
    return torch.randperm(n, generator=gen).numpy()


def _stop_everywhere(stop: bool, distributed: bool, device) -> bool:
    """Rank 0's decision to stop, shared with every rank."""
    if not distributed:
        return stop
    import torch.distributed as dist
    flag = torch.tensor([1.0 if stop else 0.0], device=device)
    dist.broadcast(flag, src=0)
    return bool(flag.item() > 0)


# ---------------------------------------------------------------------- outputs

def _choose_k_for_best(best_path: Path, template, val_cache: BlockCache,
                       cfg: TrainConfig) -> None:
    """Re-score ``best.pt`` for every candidate K and rewrite it with the best K."""
    from ..checkpoint import read_checkpoint
    obj = read_checkpoint(best_path)
    best = copy.deepcopy(template)
    best.load_state_dict(obj["state_dict"])
    k, scores = choose_num_steps(best, val_cache, cfg.choose_num_steps, cfg.val_batch_size,
                                 cfg.val_max_molecules)
    best.config = replace(best.config, flow=replace(best.config.flow, num_steps=k))
    card = dict(obj["card"])
    card["metrics"] = {**card.get("metrics", {}), "val_h_mae_uha": scores[k],
                       "flow_num_steps": k,
                       "val_h_mae_uha_by_num_steps": {str(j): v for j, v in scores.items()}}
    save_checkpoint(best_path, best, card)


def _format_scores(scores: dict) -> dict:
    """Validation scores as log-file strings (µHa to 2 decimals, density error to 5)."""
    out = {"val_mae_uha": f"{scores['val_mae_uha']:.2f}"}
    if "val_density_err" in scores:
        out["val_density_err"] = f"{scores['val_density_err']:.5f}"
    return out


def _append_log(path: Path, row: dict) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=LOG_FIELDS)
        if new:
            w.writeheader()
        w.writerow({k: row.get(k, "") for k in LOG_FIELDS})


# ---------------------------------------------------------------------- loop

@dataclass
class _Run:
    """The state one :func:`fit` call threads through its steps (built by :func:`_setup`).

    ``step``, ``best`` and ``elapsed_before`` are what ``state.pt`` saves
    besides the weights and optimizer; ``history`` is this call's loss curve.
    """

    cfg: TrainConfig
    model: torch.nn.Module  # the bare model: saved, EMA-tracked, gradient-clipped
    ema: EMA
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    train_cache: BlockCache
    val_cache: BlockCache | None
    out: Path
    device: torch.device
    dtype: torch.dtype
    distributed: bool
    rank: int
    world: int
    card: dict | None  # extra model-card fields for best.pt
    net: torch.nn.Module | None = None  # what a step calls: the model or its DDP wrapper
    step: int = 0
    best: float = float("inf")  # best validation score of cfg.val_metric (lower is better)
    elapsed_before: float = 0.0  # training seconds of the runs this one resumes
    t_start: float = 0.0  # time.perf_counter() when this call's loop started
    history: list[tuple[int, float]] = field(default_factory=list)  # (step, loss)

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that validates and writes files."""
        return self.rank == 0

    @property
    def state_path(self) -> Path:
        return self.out / "state.pt"

    @property
    def best_path(self) -> Path:
        return self.out / "best.pt"

    @property
    def log_path(self) -> Path:
        return self.out / "log.csv"

    def elapsed(self, now: float | None = None) -> float:
        """Training seconds over this run and the ones it resumes."""
        return self.elapsed_before + (time.perf_counter() if now is None else now) - self.t_start


def _overlap_damping(model) -> float:
    """The model's inference-time overlap damping tau (0 for a model without one)."""
    config = getattr(model, "config", None)
    if hasattr(config, "overlap_damping"):
        return float(config.overlap_damping)
    return float(getattr(model, "overlap_damping", 0.0))


def _block_cache(model, cfg: TrainConfig, dataset, indices) -> BlockCache:
    indices = np.arange(len(dataset)) if indices is None else indices
    return BlockCache(dataset, indices, model.basis_layout, model.cutoff, model.pair_cutoff,
                      dense=cfg.needs_dense, tau=_overlap_damping(model))


def _setup(model, train_set, val_set, out_dir: str | os.PathLike, cfg: TrainConfig,
           card: dict | None, train_indices, val_indices) -> _Run:
    """Device (and process group under torchrun), the output directory, block caches,
    EMA, AdamW and the learning-rate schedule, at step 0."""
    distributed, rank, world = _dist_env()
    if distributed:
        device = _init_distributed()
    elif cfg.device is not None:
        device = torch.device(cfg.device)
    else:
        device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    out = Path(out_dir)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    dtype = torch.float64 if cfg.float64 else torch.float32
    model.to(device=device, dtype=dtype).train()
    train_cache = _block_cache(model, cfg, train_set, train_indices)
    val_cache = _block_cache(model, cfg, val_set, val_indices) if val_set is not None else None
    if len(train_cache) == 0:
        raise ValueError("the training set is empty")
    ema = EMA(model, cfg.ema_decay)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    # a lambda, not a callable object: LambdaLR.state_dict() would store an object's __dict__
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg))
    return _Run(cfg=cfg, model=model, ema=ema, opt=opt, sched=sched, train_cache=train_cache,
                val_cache=val_cache, out=out, device=device, dtype=dtype,
                distributed=distributed, rank=rank, world=world, card=card)


def _resume(run: _Run) -> None:
    """Load weights, EMA, optimizer, schedule, step and best score from ``state.pt``."""
    state = load_training_state(run.state_path)
    from ..model import ModelConfig
    saved = ModelConfig.from_dict(state["model_config"])  # normalises older layouts
    here = run.model.config
    # the network, flow and protocol must match; inference-only options (tau, gap
    # guard) are the run's own, so a --config preset or --init-from may differ there
    if (saved.net, saved.flow, saved.protocol, saved.name) != (
            here.net, here.flow, here.protocol, here.name):
        raise ValueError(f"{run.state_path}: saved for model config {saved.to_dict()}, "
                         f"not {here.to_dict()}")
    run.model.config = run.ema.module.config = saved  # best.pt is written from the EMA copy
    run.model.load_state_dict(state["model"])
    run.ema.load_state_dict(state["ema"])
    run.opt.load_state_dict(state["optimizer"])
    run.sched.load_state_dict(state["scheduler"])
    # the loaded schedule keeps the saved run's peak lr whatever cfg.lr says; record
    # that value, so best.pt's card states the lr the weights were trained with
    saved_lr = float(state["scheduler"]["base_lrs"][0])
    if not math.isclose(saved_lr, run.cfg.lr, rel_tol=1e-9):
        if run.rank == 0:
            print(f"resuming {run.state_path}: peak lr {saved_lr:g} of the saved run "
                  f"(lr {run.cfg.lr:g} of this one is not used)", file=sys.stderr)
        run.cfg = replace(run.cfg, lr=saved_lr)
    # card fields of the first run (e.g. init_from) that this one does not set survive
    saved_card = state.get("card") or {}
    run.card = {**saved_card,
                **{k: v for k, v in (run.card or {}).items() if v is not None}}
    run.step, run.best = int(state["step"]), float(state["best_val_mae_uha"])
    run.elapsed_before = float(state["elapsed_s"])


def _distribute(run: _Run) -> None:
    """Set ``run.net``: the model, wrapped in DDP when distributed.

    After :func:`_resume`: DDP broadcasts rank 0's weights when it wraps them.
    """
    run.net = run.model
    if run.distributed:
        from torch.nn.parallel import DistributedDataParallel
        run.net = DistributedDataParallel(
            run.model, device_ids=[run.device] if run.device.type == "cuda" else None)


def _save_state(run: _Run) -> None:
    """Write ``state.pt``: everything :func:`_resume` needs to continue exactly."""
    save_training_state(run.state_path, {
        "model_config": run.model.config.to_dict(), "train_config": asdict(run.cfg),
        "model": run.model.state_dict(), "ema": run.ema.state_dict(),
        "optimizer": run.opt.state_dict(), "scheduler": run.sched.state_dict(),
        # the key says MAE for old runs' sake; it holds the best score of cfg.val_metric
        "step": run.step, "best_val_mae_uha": run.best,
        "elapsed_s": run.elapsed(), "card": run.card or {}})


def _best_card(run: _Run, scores: dict) -> dict:
    """The model card of ``best.pt`` for validation ``scores`` at the current step."""
    metrics = {"val_h_mae_uha": scores["val_mae_uha"], "flow_num_steps": run.model.flow.num_steps,
               "val_molecules": 0 if run.val_cache is None else len(run.val_cache)}
    if "val_density_err" in scores:
        metrics["val_density_err"] = scores["val_density_err"]
    return {**(run.card or {}), "steps": run.step, "metrics": metrics,
            "train_config": asdict(run.cfg)}


def _validate(run: _Run) -> dict:
    """Validation scores of the EMA weights; writes best.pt when ``val_metric`` improves."""
    cfg, val_cache = run.cfg, run.val_cache
    if val_cache is None or len(val_cache) == 0:
        return {"val_mae_uha": float("nan")}
    scores = {"val_mae_uha": evaluate(run.ema.module, val_cache, cfg.val_batch_size,
                                      max_molecules=cfg.val_max_molecules)}
    if cfg.val_metric == "density":
        scores["val_density_err"] = evaluate_density_error(
            run.ema.module, val_cache, cfg.val_batch_size, max_molecules=cfg.val_max_molecules)
    score = scores["val_density_err" if cfg.val_metric == "density" else "val_mae_uha"]
    if score < run.best:
        run.best = score
        save_checkpoint(run.best_path, run.ema.module, _best_card(run, scores))
    return scores


def _train_step(run: _Run, idx: np.ndarray, gen: torch.Generator) -> dict:
    """One optimizer step on the training records ``idx``; returns the step's metrics."""
    cfg, cache = run.cfg, run.train_cache
    batch, info = collate([cache[int(i)] for i in idx], run.dtype, run.device)
    need = (("x",) if cfg.eig_weight > 0 else ()) + (
        ("density",) if cfg.density_weight > 0 else ())
    dense = [cache.dense_data(int(i), need) for i in idx] if need else None
    loss, metrics = training_step(run.net, batch, run.model.flow,
                                  run.model.basis_layout.irreps_str, cfg, gen, dense, info)
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip:
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), cfg.grad_clip)
    run.opt.step()
    run.sched.step()
    run.ema.update(run.model)
    run.step += 1
    run.history.append((run.step, metrics["loss"]))
    return metrics


class StopOnSignal:
    """A stop flag set by SIGINT or SIGTERM while the block runs (a second SIGINT
    interrupts at once); the previous handlers are restored on exit.

    ``fit(..., stop_when=lambda step: bool(flag))`` then ends the run after the
    current step the way ``--max-minutes`` does: final validation, ``best.pt``
    and ``state.pt``, so ``--resume`` loses nothing.  ``message`` is printed
    when it is set.
    """

    def __init__(self, message: str = "stopping after this step; state.pt is written"):
        self.reason: str | None = None
        self._message = message
        self._old: dict = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)

    def _on_signal(self, signum, frame) -> None:
        if self.reason is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self._set(signal.Signals(signum).name)

    def _set(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
            tqdm.write(f"qhflow: {reason}: {self._message}")

    def __bool__(self) -> bool:
        return self.reason is not None


def _train(run: _Run, stop_at: int | None, stop_when=None) -> bool:
    """Train until ``cfg.steps``, ``cfg.max_minutes``, ``stop_at`` or ``stop_when(step)``
    is true; True when stopped early.

    Rank 0 logs every ``log_every`` steps, validates every ``val_every`` and
    writes ``state.pt`` every ``ckpt_minutes`` (the last step's row, scores and
    state are :func:`_finish`'s).
    """
    cfg = run.cfg
    n_train = len(run.train_cache)
    per_rank = n_train // run.world  # world is 1 when not distributed
    bs = max(1, min(cfg.batch_size, per_rank))
    steps_per_epoch = max(1, per_rank // bs)
    gen = torch.Generator()  # flow noise and times, re-seeded from (seed, step, rank) each step
    order_epoch, order = -1, None
    run.t_start = last_ckpt = time.perf_counter()
    bar = tqdm(total=cfg.steps, initial=run.step, desc="train", unit="step",
               disable=not (run.is_main and cfg.progress))
    mae_sum, mae_count = 0.0, 0  # train MAE since the last log row
    stopped_early = False
    while run.step < cfg.steps:
        # every random draw is a function of the step, so resuming needs no RNG state
        epoch, pos = divmod(run.step, steps_per_epoch)
        if epoch != order_epoch:
            order = _epoch_order(n_train, epoch, cfg.seed, run.distributed, run.rank, run.world)
            order_epoch = epoch
        gen.manual_seed(cfg.seed * 1_000_003 + run.step * run.world + run.rank)
        metrics = _train_step(run, order[pos * bs:(pos + 1) * bs], gen)
        mae_sum += metrics["mae"]
        mae_count += 1
        bar.update(1)
        bar.set_postfix(loss=f"{metrics['loss']:.3e}")

        now = time.perf_counter()
        step = run.step
        if (run.is_main and step < cfg.steps
                and (step % cfg.log_every == 0 or step % cfg.val_every == 0)):
            row = {"step": step, "time_s": f"{run.elapsed(now):.1f}",
                   "lr": f"{run.sched.get_last_lr()[0]:.3e}",
                   "train_loss": f"{metrics['loss']:.6e}",
                   "train_mae_uha": f"{mae_sum / mae_count * HARTREE_TO_UHA:.2f}"}
            mae_sum, mae_count = 0.0, 0
            if step % cfg.val_every == 0:
                row.update(_format_scores(_validate(run)))
            _append_log(run.log_path, row)
        out_of_time = ((cfg.max_minutes is not None and now - run.t_start > 60.0 * cfg.max_minutes)
                       or (stop_at is not None and step >= stop_at)
                       or (stop_when is not None and stop_when(step)))
        if run.is_main and now - last_ckpt > 60.0 * cfg.ckpt_minutes and not out_of_time:
            _save_state(run)
            last_ckpt = now
        if _stop_everywhere(out_of_time, run.distributed, run.device):
            stopped_early = step < cfg.steps
            break
    bar.close()
    return stopped_early


def _finish(run: _Run) -> float:
    """Final validation, ``best.pt``, the choice of K, the last log row and ``state.pt``
    (rank 0), then the process group's end.  Returns the final validation H MAE
    (NaN on other ranks or without a validation set)."""
    cfg = run.cfg
    final_mae = float("nan")
    if run.is_main:
        scores = _validate(run)
        final_mae = scores["val_mae_uha"]
        if not run.best_path.exists():  # no validation set: keep the final EMA weights
            save_checkpoint(run.best_path, run.ema.module, _best_card(run, scores))
        elif cfg.choose_num_steps and run.val_cache is not None and len(run.val_cache):
            _choose_k_for_best(run.best_path, run.ema.module, run.val_cache, cfg)
        _append_log(run.log_path, {
            "step": run.step, "time_s": f"{run.elapsed():.1f}",
            "lr": f"{run.sched.get_last_lr()[0]:.3e}",
            "train_loss": f"{run.history[-1][1]:.6e}" if run.history else "",
            **_format_scores(scores)})
        _save_state(run)
    if run.distributed:
        import torch.distributed as dist
        dist.barrier()
        dist.destroy_process_group()
    return final_mae


def fit(model, train_set, val_set, out_dir: str | os.PathLike, cfg: TrainConfig,
        resume: bool = False, card: dict | None = None,
        train_indices=None, val_indices=None, stop_at: int | None = None,
        stop_when=None) -> dict:
    """Train ``model`` in place; returns a summary (steps, best val MAE, loss history).

    ``train_set``/``val_set``: indexable record collections (``val_set`` may be
    None); ``train_indices``/``val_indices`` select from them (default: all).
    ``card``: extra model-card fields for ``best.pt`` (data, split...).
    ``stop_at``: stop after this step as if time ran out (state saved; the
    schedule still follows ``cfg.steps``), for runs in chunks.
    ``stop_when``: a callable ``f(step) -> bool`` asked after every step (rank 0's
    answer counts); true stops the same way (``qhflow learn`` stops a round
    when new labels are ready or a signal came).

    Steps:

    1. :func:`_setup`: device (process group under torchrun), block caches,
       EMA, optimizer and schedule;
    2. :func:`_resume` (``resume=True``): continue from ``out_dir/state.pt``;
    3. :func:`_distribute`: the DDP wrapper when distributed;
    4. :func:`_train`: optimizer steps (:func:`_train_step`) with log rows,
       periodic validation (:func:`_validate`, which keeps ``best.pt``) and
       periodic ``state.pt`` (:func:`_save_state`);
    5. :func:`_finish`: final validation, ``best.pt`` and its K, the last log
       row, ``state.pt``.
    """
    run = _setup(model, train_set, val_set, out_dir, cfg, card, train_indices, val_indices)
    if resume:
        _resume(run)
    _distribute(run)
    stopped_early = _train(run, stop_at, stop_when)
    final_mae = _finish(run)
    return {"step": run.step, "val_metric": cfg.val_metric, "best_val_score": run.best,
            "best_val_mae_uha": run.best if cfg.val_metric == "h_mae" else float("nan"),
            "final_val_mae_uha": final_mae,
            "history": run.history, "stopped_early": stopped_early, "out_dir": str(run.out)}
