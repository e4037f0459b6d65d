"""Shared fixtures: small molecules built from the shipped examples (never ../shared)."""
from __future__ import annotations

from pathlib import Path

import pytest
from pyscf import gto

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def example_mol(name: str, basis: str = "def2-svp", **kwargs) -> gto.Mole:
    return gto.M(atom=str(EXAMPLES / f"{name}.xyz"), basis=basis, verbose=0, **kwargs)


@pytest.fixture
def water():
    return example_mol("water")


@pytest.fixture
def methane():
    return example_mol("methane")


@pytest.fixture
def ethanol():
    return example_mol("ethanol")


@pytest.fixture
def fluoroacetamide():
    return example_mol("fluoroacetamide")


@pytest.fixture(autouse=True)
def private_hinit_cache(tmp_path_factory, monkeypatch):
    """Tests never read or write the user's H_init cache (~/.cache/pyscf_qhflow)."""
    monkeypatch.setenv("QHFLOW_CACHE", str(tmp_path_factory.mktemp("hinit_cache")))


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """An untrained tiny model saved as a checkpoint (for the CLI and harness tests)."""
    from pyscf_qhflow.checkpoint import save_checkpoint
    from pyscf_qhflow.model import QHFlowModel
    path = tmp_path_factory.mktemp("weights") / "tiny.pt"
    save_checkpoint(path, QHFlowModel.from_config("tiny", seed=0), {"data": "untrained"})
    return path
