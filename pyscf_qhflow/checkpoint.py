"""Weights I/O: one file = config + state_dict + model card (protocol, data, metrics).

A checkpoint is a plain ``torch.save`` of a dict of tensors, strings and
numbers, loaded with ``torch.load(weights_only=True)`` (no pickled code)::

    {"format": "pyscf-qhflow-checkpoint", "format_version": 1,
     "config": ModelConfig.to_dict(), "state_dict": {...}, "card": {...}}

The card records the label protocol (xc, basis, elements), the data and split
used, training steps, metrics, code versions and ``sha256``, a digest of every
tensor (name, dtype, shape, bytes) that :func:`load_model` checks.  Training
state (optimizer, scheduler, EMA, step, RNG) lives in a separate file
(:func:`save_training_state`), so shipped weights carry none of it.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import torch

from .fileio import atomic_path

__all__ = ["CheckpointError", "FORMAT", "DEFAULT_WEIGHTS", "tensor_digest",
           "save_checkpoint", "read_checkpoint", "update_checkpoint", "load_model",
           "resolve_weights_path", "card_path", "read_card", "write_card",
           "save_training_state", "load_training_state"]

FORMAT = "pyscf-qhflow-checkpoint"
FORMAT_VERSION = 1
DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "weights" / "default.pt"


class CheckpointError(ValueError):
    """A checkpoint file is unreadable, truncated, tampered with or inconsistent."""


def tensor_digest(state_dict: dict) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes (sorted by name)."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _code_version() -> str:
    from .version import __version__
    return f"pyscf_qhflow {__version__}, torch {torch.__version__}"


def _atomic_save(obj, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def save_checkpoint(path: str | Path, model, card: dict | None = None) -> dict:
    """Write ``model`` (config + state_dict) and its model card to ONE file.

    ``card`` adds/overrides fields (``data``, ``split``, ``steps``, ``metrics``...);
    values must be str/int/float/bool/None or lists/dicts of those.
    Returns the card written.
    """
    state = {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}
    full_card = {
        "name": model.name, "xc": model.xc, "basis": model.basis,
        "elements": list(model.elements), "data": None, "split": None, "steps": None,
        "metrics": {}, "code_version": _code_version(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "num_parameters": int(sum(v.numel() for v in model.parameters())),
        "dtype": str(model.dtype).replace("torch.", ""),
    }
    full_card.update(card or {})
    full_card["sha256"] = tensor_digest(state)
    _atomic_save({"format": FORMAT, "format_version": FORMAT_VERSION,
                  "config": model.config.to_dict(), "state_dict": state, "card": full_card},
                 Path(path))
    return full_card


def read_checkpoint(path: str | Path) -> dict:
    """Load and verify a checkpoint file; :class:`CheckpointError` names the file on failure."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises RuntimeError, UnpicklingError, EOFError...
        raise CheckpointError(f"{path}: not a readable qhflow checkpoint (corrupt or "
                              f"truncated?): {type(err).__name__}: {err}") from err
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a qhflow checkpoint (no format={FORMAT!r})")
    if obj.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version "
                              f"{obj.get('format_version')} is not {FORMAT_VERSION}")
    for key in ("config", "state_dict", "card"):
        if not isinstance(obj.get(key), dict):
            raise CheckpointError(f"{path}: checkpoint has no {key!r} section")
    expected = obj["card"].get("sha256")
    digest = tensor_digest(obj["state_dict"])
    if digest != expected:
        raise CheckpointError(f"{path}: sha256 of the weights is {digest}, the card says "
                              f"{expected}: the file is corrupt or was modified")
    return obj


def update_checkpoint(path: str | Path, config: dict | None = None,
                      card: dict | None = None) -> dict:
    """Change inference options of a checkpoint in place; the weights stay byte-identical.

    ``config`` updates top-level config fields (e.g. ``{"overlap_damping": 0.01}``),
    ``card`` updates model-card fields.  The file is verified first, the new
    config validated, and the file replaced atomically; its sha256 (of the
    tensors) does not change.  Returns the new card.
    """
    from .model import ModelConfig

    path = Path(path)
    obj = read_checkpoint(path)
    new_config = {**obj["config"], **(config or {})}
    try:
        ModelConfig.from_dict(new_config)
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"{path}: the updated config is invalid: {err}") from err
    obj["config"] = new_config
    obj["card"] = {**obj["card"], **(card or {}), "sha256": obj["card"]["sha256"]}
    _atomic_save(obj, path)
    return obj["card"]


def load_model(name_or_path: str | Path = "default", device: str | torch.device | None = None,
               compile: bool = False):
    """A :class:`~pyscf_qhflow.model.QHFlowModel` from a checkpoint, in eval mode.

    ``'default'`` is ``pyscf_qhflow/weights/default.pt`` of the installed
    package; anything else is a path.  ``device=None`` picks CUDA when available.
    ``compile=True`` runs the network through ``torch.compile``
    (:meth:`~pyscf_qhflow.model.QHFlowModel.compile_net`): worth it for many
    molecules on a GPU, the first predictions pay the compilation.
    The model card is at ``model.card``: the card file beside the weights
    (:func:`card_path`) when there is one for these tensors, else the card
    stored in the file.
    """
    from .model import ModelConfig, QHFlowModel

    path = resolve_weights_path(name_or_path)
    obj = read_checkpoint(path)
    try:
        config = ModelConfig.from_dict(obj["config"])
        model = QHFlowModel(config)
    except (ValueError, TypeError, KeyError) as err:
        raise CheckpointError(f"{path}: invalid model config in checkpoint: {err}") from err
    state = obj["state_dict"]
    dtypes = {v.dtype for v in state.values() if v.is_floating_point()}
    if len(dtypes) == 1:
        model.to(dtypes.pop())
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not fit the config's network: {err}") from err
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device).eval()
    model.card = read_card(path, obj["card"])
    if compile:
        model.compile_net()
    return model


def resolve_weights_path(name_or_path: str | Path) -> Path:
    """``'default'`` -> the installed package's weights; anything else is a path.

    ``FileNotFoundError`` (saying what to do) when the file does not exist.
    """
    if str(name_or_path) == "default":
        path = DEFAULT_WEIGHTS
        if not path.is_file():
            raise FileNotFoundError(
                f"no trained weights are installed ({path} does not exist); train a model "
                "with `qhflow train` and pass its checkpoint path (e.g. RUN_DIR/best.pt), "
                "or install a release that ships weights")
        return path
    path = Path(name_or_path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {path}")
    return path


def card_path(weights: str | Path) -> Path:
    """The model-card file beside a weights file: ``NAME.card.json`` for ``NAME.pt``.

    A card file lets the card (metrics, notes) change without a new multi-MB
    weights blob in git; it applies only to the tensors whose sha256 it names.
    """
    weights = Path(weights)
    return weights.with_name(weights.name.removesuffix(".pt") + ".card.json")


def read_card(weights: str | Path, stored: dict) -> dict:
    """The card of ``weights``: the card file when present (it must name the same
    sha256 as ``stored``, the card inside the file), else ``stored``."""
    path = card_path(Path(weights).resolve())
    if not path.is_file():
        path = card_path(weights)
    if not path.is_file():
        return dict(stored)
    try:
        card = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path}: unreadable model card: {err}") from err
    if card.get("sha256") != stored.get("sha256"):
        raise CheckpointError(f"{path}: the card describes tensors with sha256 "
                              f"{card.get('sha256')}, the weights beside it are "
                              f"{stored.get('sha256')}")
    return card


def write_card(weights: str | Path, updates: dict) -> Path:
    """Write the card file beside ``weights``: the current card with ``updates`` merged in.

    The tensors' sha256 is copied from the weights (never from ``updates``), so
    the card can only describe the file it sits beside.  Returns the card path.
    """
    from .fileio import atomic_write_text
    obj = read_checkpoint(weights)
    card = {**read_card(weights, obj["card"]), **updates, "sha256": obj["card"]["sha256"]}
    path = card_path(Path(weights).resolve())
    atomic_write_text(path, json.dumps(card, indent=1, sort_keys=False) + "\n")
    return path


def save_training_state(path: str | Path, state: dict) -> None:
    """Write the resumable training state (optimizer, scheduler, EMA, step, RNG)."""
    _atomic_save({"format": FORMAT + "-training-state", **state}, Path(path))


def load_training_state(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no training state at {path} (nothing to resume)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"{path}: unreadable training state: "
                              f"{type(err).__name__}: {err}") from err
    if not isinstance(obj, dict) or obj.get("format") != FORMAT + "-training-state":
        raise CheckpointError(f"{path}: not a qhflow training-state file")
    return obj
