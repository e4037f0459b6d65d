"""The QHFlow model: the network, its flow sampler, and the label protocol.

A :class:`QHFlowModel` is a ``torch.nn.Module``: the network
(:class:`~pyscf_qhflow.nn.net.QHFlowNet`, which never sees PySCF), the flow
sampler over its residual (:meth:`QHFlowModel.sample`), the protocol of its
training labels (functional, basis, elements) and the padded AO layout of that
basis.  Turning a molecule into a Fock matrix -- checks, H_init, batching,
post-processing -- is the job of :class:`pyscf_qhflow.guess.predictor.Predictor`.

Presets are JSON files in ``pyscf_qhflow/configs/`` (``tiny``, ``small``,
``medium``)::

    {"name": ..., "net": {NetConfig fields}, "flow": {FlowConfig fields},
     "protocol": {"xc": "b3lyp", "basis": "def2-svp", "elements": [1, 6, 7, 8, 9]},
     "overlap_damping": 0.0, "min_gap_ratio": 0.5}

``overlap_damping`` (tau, optional, default 0 = off) and ``min_gap_ratio``
(optional, default 0.5; 0 = off) are inference options stored beside the
weights because they are chosen for them on the validation split (``qhflow
tune``); the :class:`~pyscf_qhflow.guess.predictor.Predictor` takes them as
defaults (:mod:`pyscf_qhflow.guess.overlap_damping`,
:mod:`pyscf_qhflow.guess.gap_guard`).  Like the flow's K they never change
the weights.

Unknown keys anywhere are an error (:class:`ModelConfig`).  ``residual_range``
(removed in 0.2; see CHANGELOG.md) is accepted only as ``null``, the value
every shipped checkpoint stored.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from . import keys
from .aolayout import BasisLayout
from .config import reject_unknown_keys
from .flow import FlowConfig, euler_sample, sample_prior
from .guess.gap_guard import DEFAULT_MIN_GAP_RATIO

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
            from pyscf import gto
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
    # the gap guard: least predicted gap / H_init gap before tau is raised; 0 = off
    min_gap_ratio: float = DEFAULT_MIN_GAP_RATIO

    def __post_init__(self):
        if not self.overlap_damping >= 0:
            raise ValueError(f"overlap_damping must be >= 0, got {self.overlap_damping}")
        if not 0 <= self.min_gap_ratio < 1:
            raise ValueError(f"min_gap_ratio must be in [0, 1), got {self.min_gap_ratio}")

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        d = dict(d)
        if "residual_range" in d:  # removed option; every shipped checkpoint stored null
            if d.pop("residual_range") is not None:
                raise ValueError("residual_range was removed in pyscf_qhflow 0.2 (the gap "
                                 "guard covers its one use); drop it from the config")
        reject_unknown_keys(cls, d, "the model config")
        if "name" not in d:
            raise ValueError("the model config needs a 'name'")
        return cls(name=str(d["name"]), net=dict(d.get("net", {})),
                   flow=FlowConfig.from_dict(d.get("flow", {})),
                   protocol=Protocol.from_dict(d.get("protocol", {})),
                   overlap_damping=float(d.get("overlap_damping", 0.0)),
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
    """Network + flow sampler + protocol (wrap it in a ``Predictor`` to predict Fock matrices).

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
        self.card: dict = {}  # the model card of the checkpoint it was loaded from
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

    def extra_repr(self) -> str:
        return (f"name={self.name!r}, xc={self.xc!r}, basis={self.basis!r}, "
                f"irreps_block={self.basis_layout.irreps_str!r}, cutoff={self.cutoff}, "
                f"pair_cutoff={self.pair_cutoff}, flow={self.flow}, "
                f"overlap_damping={self.config.overlap_damping}, "
                f"min_gap_ratio={self.config.min_gap_ratio}")
