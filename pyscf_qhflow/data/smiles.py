"""SMILES -> 3D geometry with RDKit (optional: ``pip install rdkit``).

Used by ``qhflow learn --smiles FILE``: the geometry is embedded in the
labelling worker (:meth:`pyscf_qhflow.data.label.MoleculeSpec.atoms`), so a
large library costs nothing up front.  ETKDG embedding (seeded) then an MMFF
(else UFF) relaxation; explicit hydrogens are added.
"""
from __future__ import annotations

import numpy as np

__all__ = ["smiles_to_geometry"]


def _rdkit():
    try:
        from rdkit import Chem
        from rdkit.Chem import AllChem
    except ImportError:
        raise ImportError("SMILES input needs the optional package rdkit: "
                          "pip install rdkit (or pip install pyscf-qhflow[smiles])") from None
    return Chem, AllChem


def smiles_to_geometry(smiles: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(Z (natm,) int64, positions (natm, 3) Angstrom) of one embedded conformer.

    Raises ``ValueError`` for a SMILES RDKit cannot parse or embed.
    """
    Chem, AllChem = _rdkit()
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise ValueError(f"RDKit cannot parse SMILES {smiles!r}")
    mol = Chem.AddHs(mol)
    params = AllChem.ETKDGv3()
    params.randomSeed = int(seed)
    if AllChem.EmbedMolecule(mol, params) != 0:
        raise ValueError(f"RDKit could not embed a 3D geometry for {smiles!r}")
    if AllChem.MMFFHasAllMoleculeParams(mol):
        AllChem.MMFFOptimizeMolecule(mol, maxIters=2000)
    else:
        AllChem.UFFOptimizeMolecule(mol, maxIters=2000)
    Z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()], np.int64)
    R = np.asarray(mol.GetConformer().GetPositions(), np.float64)  # [natm, 3] Angstrom
    return Z, R
