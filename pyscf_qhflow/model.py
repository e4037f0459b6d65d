"""The QHFlow predictor: network + flow options + label protocol.

A :class:`QHFlowModel` is what :mod:`pyscf_qhflow.scf_guess` calls a
*predictor*: ``predict_fock(mol) -> (nao, nao)`` float64, PySCF AO order,
Hartree; ``supports(mol) -> (bool, reason)``; ``name``, ``xc``, ``basis``.
The pipeline itself lives in :func:`pyscf_qhflow.predict.predict_fock`.

Presets are JSON files in ``pyscf_qhflow/configs/`` (``tiny``, ``small``,
``medium``)::

    {"name": ..., "net": {NetConfig fields}, "flow": {FlowConfig fields},
     "protocol": {"xc": "b3lyp", "basis": "def2-svp", "elements": [1, 6, 7, 8, 9]},
     "overlap_damping": 0.0, "residual_range": null, "min_gap_ratio": 0.5}

``overlap_damping`` (tau, optional, default 0 = off) damps the predicted
residual along near-null directions of S (:mod:`pyscf_qhflow.overlap_damping`);
``residual_range`` ([r_on, r_off] Angstrom, optional, default null = off)
switches the residual off for far atom pairs (:mod:`pyscf_qhflow.residual_range`);
``min_gap_ratio`` (optional, default 0.5; 0 = off) raises one molecule's
damping while its predicted HOMO-LUMO gap is below that fraction of
H_init's (:mod:`pyscf_qhflow.gap_guard`).
Like the flow's K they are inference options chosen on the validation split
after training (``benchmarks/tune_overlap_damping.py``,
``benchmarks/tune_residual_range.py``).

Unknown keys anywhere are an error (:class:`ModelConfig`).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from pyscf import gto

from . import keys
from .config import reject_unknown_keys
from .aolayout import BasisLayout, MolLayout, UnsupportedMoleculeError
from .flow import FlowConfig, euler_sample, sample_prior
from .gap_guard import DEFAULT_MIN_GAP_RATIO

__all__ = ["CONFIG_DIR", "PRESETS", "Protocol", "ModelConfig", "QHFlowModel"]

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
PRESETS = ("tiny", "small", "medium")


@dataclass(frozen=True)
class Protocol:
    """How the training labels were made: functional, basis, elements (atomic numbers)."""

    xc: str = "b3lyp"
    basis: str = "def2-svp"
    elements: tuple[int, ...] = (1, 6, 7, 8, 9)

    @classmethod
    def from_dict(cls, d: dict) -> "Protocol":
        reject_unknown_keys(cls, d, "the model config's 'protocol'")
        d = dict(d)
        if "elements" in d:
            d["elements"] = tuple(int(gto.charge(e)) if isinstance(e, str) else int(e)
                                  for e in d["elements"])
        return cls(**d)


@dataclass(frozen=True)
class ModelConfig:
    """A model: its name, network options (``NetConfig`` fields), flow and protocol."""

    name: str
    net: dict = field(default_factory=dict)
    flow: FlowConfig = field(default_factory=FlowConfig)
    protocol: Protocol = field(default_factory=Protocol)
    overlap_damping: float = 0.0  # tau of W R W, W = S (S + tau)^-1 (inference only)
    # (r_on, r_off) Angstrom: far pairs keep H_init (inference only); None = off
    residual_range: tuple[float, float] | None = None
    # the gap guard: least predicted gap / H_init gap before tau is raised; 0 = off
    min_gap_ratio: float = DEFAULT_MIN_GAP_RATIO

    def __post_init__(self):
        if not self.overlap_damping >= 0:
            raise ValueError(f"overlap_damping must be >= 0, got {self.overlap_damping}")
        if not 0 <= self.min_gap_ratio < 1:
            raise ValueError(f"min_gap_ratio must be in [0, 1), got {self.min_gap_ratio}")
        if self.residual_range is not None:
            r_on, r_off = (float(r) for r in self.residual_range)
            if not 0 < r_on < r_off:
                raise ValueError("residual_range must be [r_on, r_off] with 0 < r_on < r_off "
                                 f"(Angstrom), got {list(self.residual_range)}")
            object.__setattr__(self, "residual_range", (r_on, r_off))

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        reject_unknown_keys(cls, d, "the model config")
        if "name" not in d:
            raise ValueError("the model config needs a 'name'")
        return cls(name=str(d["name"]), net=dict(d.get("net", {})),
                   flow=FlowConfig.from_dict(d.get("flow", {})),
                   protocol=Protocol.from_dict(d.get("protocol", {})),
                   overlap_damping=float(d.get("overlap_damping", 0.0)),
                   residual_range=(None if d.get("residual_range") is None
                                   else tuple(d["residual_range"])),
                   min_gap_ratio=float(d.get("min_gap_ratio", DEFAULT_MIN_GAP_RATIO)))

    @classmethod
    def preset(cls, name: str) -> "ModelConfig":
        path = CONFIG_DIR / f"{name}.json"
        if not path.is_file():
            raise ValueError(f"no model preset {name!r}; presets: {list(PRESETS)}")
        return cls.from_dict(json.loads(path.read_text()))

    def to_dict(self) -> dict:
        return {"name": self.name, "net": dict(self.net), "flow": self.flow.to_dict(),
                "protocol": {**asdict(self.protocol),
                             "elements": list(self.protocol.elements)},
                "overlap_damping": self.overlap_damping,
                "residual_range": (None if self.residual_range is None
                                   else list(self.residual_range)),
                "min_gap_ratio": self.min_gap_ratio}


def _build_net(net_options: dict, protocol: Protocol, layout: BasisLayout):
    from .nn.net import NetConfig, QHFlowNet

    opts = dict(net_options)
    opts.setdefault("irreps_block", layout.irreps_str)
    opts.setdefault("elements", list(protocol.elements))
    cfg = NetConfig.from_dict(opts)
    if str(cfg.irreps_block) != layout.irreps_str:
        raise ValueError(f"net irreps_block {cfg.irreps_block!r} does not match basis "
                         f"{protocol.basis!r} for elements {protocol.elements}: "
                         f"{layout.irreps_str!r}")
    if tuple(sorted(cfg.elements)) != tuple(sorted(protocol.elements)):
        raise ValueError(f"net elements {tuple(cfg.elements)} differ from the protocol's "
                         f"{protocol.elements}")
    return QHFlowNet(cfg), cfg


class QHFlowModel(torch.nn.Module):
    """Network + flow options + protocol; a predictor for the ``'qhflow'`` guess.

    ``net`` may be given explicitly (any module with ``forward(batch) ->
    (onsite, offsite)``) together with its ``cutoff``/``pair_cutoff``; by
    default it is built from ``config.net`` with :class:`~pyscf_qhflow.nn.net.QHFlowNet`.
    """

    def __init__(self, config: ModelConfig, net: torch.nn.Module | None = None,
                 cutoff: float | None = None, pair_cutoff: float | None = None):
        super().__init__()
        self.config = config
        self.basis_layout = BasisLayout.from_basis(config.protocol.basis,
                                                   config.protocol.elements)
        if net is None:
            net, net_cfg = _build_net(config.net, config.protocol, self.basis_layout)
            cutoff, pair_cutoff = net_cfg.cutoff, net_cfg.pair_cutoff
        if cutoff is None or pair_cutoff is None:
            raise ValueError("an explicit net needs cutoff and pair_cutoff (Angstrom)")
        self.net = net
        self.cutoff = float(cutoff)  # Angstrom, backbone graph
        self.pair_cutoff = float(pair_cutoff)  # Angstrom, off-site blocks
        self.last_timings: dict = {}  # seconds per pipeline step of the last prediction
        self.last_guard: list[dict] = []  # gap-guard report per molecule of the last prediction
        # torch.compile'd view of self.net, kept out of the module registry so the
        # state_dict keys (and checkpoints) do not change; see compile_net()
        object.__setattr__(self, "_compiled_net", None)

    # ------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, name_or_dict: str | dict | ModelConfig, seed: int = 0
                    ) -> "QHFlowModel":
        """A freshly initialised model from a preset name, a dict or a ModelConfig.

        ``seed`` fixes the initial weights without touching the global RNG.
        """
        if isinstance(name_or_dict, ModelConfig):
            config = name_or_dict
        elif isinstance(name_or_dict, str):
            config = ModelConfig.preset(name_or_dict)
        else:
            config = ModelConfig.from_dict(name_or_dict)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return cls(config)

    # ------------------------------------------------------------ protocol
    @property
    def name(self) -> str:
        return self.config.name

    @property
    def xc(self) -> str:
        return self.config.protocol.xc

    @property
    def basis(self) -> str:
        return self.config.protocol.basis

    @property
    def elements(self) -> tuple[int, ...]:
        return self.config.protocol.elements

    @property
    def flow(self) -> FlowConfig:
        return self.config.flow

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def set_num_steps(self, num_steps: int) -> None:
        """Use ``num_steps`` flow Euler steps (K) by default from now on (K = 0: regression)."""
        if int(num_steps) < 0:
            raise ValueError(f"num_steps must be >= 0, got {num_steps}")
        self.config = replace(self.config, flow=replace(self.config.flow,
                                                        num_steps=int(num_steps)))

    @property
    def overlap_damping(self) -> float:
        """tau of the residual's overlap damping (:mod:`pyscf_qhflow.overlap_damping`)."""
        return self.config.overlap_damping

    def set_overlap_damping(self, tau: float) -> None:
        """Damp the residual with ``tau`` from now on (0 = off); see :mod:`~pyscf_qhflow.overlap_damping`."""
        self.config = replace(self.config, overlap_damping=float(tau))

    @property
    def residual_range(self) -> tuple[float, float] | None:
        """(r_on, r_off) Angstrom beyond which pairs keep H_init (:mod:`pyscf_qhflow.residual_range`)."""
        return self.config.residual_range

    def set_residual_range(self, residual_range: tuple[float, float] | None) -> None:
        """Switch the residual off between r_on and r_off Angstrom from now on (None = off)."""
        self.config = replace(self.config, residual_range=(
            None if residual_range is None else tuple(residual_range)))

    @property
    def min_gap_ratio(self) -> float:
        """Gap guard threshold (:mod:`pyscf_qhflow.gap_guard`); 0 = off."""
        return self.config.min_gap_ratio

    def set_min_gap_ratio(self, ratio: float) -> None:
        """Raise tau while predicted gap < ``ratio`` x H_init's gap, from now on (0 = off)."""
        self.config = replace(self.config, min_gap_ratio=float(ratio))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ------------------------------------------------------------ network
    def compile_net(self, backend: str = "inductor", mode: str | None = None,
                    dynamic: bool = True) -> "QHFlowModel":
        """Run the network through ``torch.compile`` from now on (inference and training).

        ``dynamic=True`` because every molecule (and batch) has other sizes; the
        first calls pay the compilation.  Weights are shared with ``self.net``,
        so checkpoints are unchanged.  Returns ``self``.
        """
        compiled = torch.compile(self.net, backend=backend, mode=mode, dynamic=dynamic)
        object.__setattr__(self, "_compiled_net", compiled)
        return self

    @property
    def is_compiled(self) -> bool:
        return self._compiled_net is not None

    def _run_net(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        net = self.net if self._compiled_net is None else self._compiled_net
        return net(batch)

    def forward(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Predicted flow endpoint (residual F* - H_init blocks, Hartree)."""
        return self._run_net(batch)

    def sample(self, batch: dict, num_steps: int | None = None,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Residual blocks from the flow sampler (``num_steps`` defaults to the config's K)."""
        k = self.flow.num_steps if num_steps is None else int(num_steps)
        on0 = torch.zeros_like(batch[keys.HINIT_ONSITE])  # [N, P, P]
        off0 = torch.zeros_like(batch[keys.HINIT_OFFSITE])  # [K, P, P]
        if k > 0 and self.flow.inference_start == "prior":
            on0, off0 = sample_prior(batch[keys.SLOT_MASK], batch[keys.PAIR_INDEX],
                                     self.basis_layout.irreps_str, self.flow.prior_scale,
                                     generator, on0.dtype)

        def endpoint(x, t):
            return self._run_net({**batch, keys.XT_ONSITE: x[0], keys.XT_OFFSITE: x[1],
                             keys.T: t})

        return euler_sample(endpoint, (on0, off0), int(batch[keys.T].shape[0]), k)

    # ------------------------------------------------------------ predictor
    def supports(self, mol: gto.Mole) -> tuple[bool, str]:
        """Can this model serve ``mol``?  ``(True, note)`` or ``(False, reason)``.

        Checks elements, the basis (same shells per atom as the model's layout
        and the same basis functions as ``self.basis``), Cartesian basis, ECP
        and ghost atoms.  Charged or open-shell molecules are served (the
        prediction is a spatial Fock matrix of a closed-shell-trained model) with a note.
        """
        try:
            MolLayout.from_mol(mol, self.basis_layout)
        except UnsupportedMoleculeError as err:
            return False, str(err)
        ref = mol.copy()
        ref.basis = self.basis
        ref.build(False, False)
        if ref._basis != mol._basis:
            return False, (f"mol.basis differs from the model's basis {self.basis!r} "
                           "(same shells, different functions)")
        if mol.charge != 0 or mol.spin != 0:
            return True, (f"note: trained on neutral closed-shell molecules; this one has "
                          f"charge {mol.charge}, 2S = {mol.spin}")
        return True, ""

    def predict_fock(self, mol: gto.Mole, num_steps: int | None = None,
                     hinit: np.ndarray | None = None) -> np.ndarray:
        """Predicted Fock matrix (nao, nao), PySCF AO order, Hartree, float64.

        ``hinit``: H_init computed by the caller in this model's protocol.
        """
        from .predict import predict_fock
        self.last_timings, self.last_guard = {}, []
        return predict_fock(mol, self, num_steps=num_steps, timings=self.last_timings,
                            hinit=hinit, guard_reports=self.last_guard)

    def predict_fock_batch(self, mols: list[gto.Mole], num_steps: int | None = None
                           ) -> list[np.ndarray]:
        """:meth:`predict_fock` for several molecules in one network batch."""
        from .predict import predict_fock_batch
        self.last_timings, self.last_guard = {}, []
        return predict_fock_batch(mols, self, num_steps=num_steps, timings=self.last_timings,
                                  guard_reports=self.last_guard)

    def extra_repr(self) -> str:
        return (f"name={self.name!r}, xc={self.xc!r}, basis={self.basis!r}, "
                f"irreps_block={self.basis_layout.irreps_str!r}, cutoff={self.cutoff}, "
                f"pair_cutoff={self.pair_cutoff}, flow={self.flow}, "
                f"overlap_damping={self.overlap_damping}, "
                f"residual_range={self.residual_range}, "
                f"min_gap_ratio={self.min_gap_ratio}")
