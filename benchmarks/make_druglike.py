"""Drug-like test molecules outside QM9: 3D geometries embedded from SMILES with RDKit.

Two sets made of the model's elements (H, C, N, O, F): ``druglike``, five
molecules of 20-40 atoms (issue #5), and ``large``, molecules of 40-100 atoms
for the SCF-savings-at-scale study (issue #7).  Each is embedded with ETKDGv3 (fixed seed) and relaxed with MMFF94; written as .xyz
(Angstrom) for ``qhflow bench scf``.  The geometries are force-field ones, not
DFT minima: fine for comparing SCF guesses, which is all they are used for.

    pip install rdkit
    python benchmarks/make_druglike.py --out benchmarks/molecules/druglike
    python benchmarks/make_druglike.py --set large --out benchmarks/molecules/large
"""
from __future__ import annotations

import argparse
from pathlib import Path

DRUGLIKE = {  # name -> SMILES
    "paracetamol": "CC(=O)Nc1ccc(O)cc1",  # C8H9NO2, 20 atoms
    "aspirin": "CC(=O)Oc1ccccc1C(=O)O",  # C9H8O4, 21 atoms
    "caffeine": "Cn1cnc2c1c(=O)n(C)c(=O)n2C",  # C8H10N4O2, 24 atoms
    "ibuprofen": "CC(C)Cc1ccc(cc1)C(C)C(=O)O",  # C13H18O2, 33 atoms
    "fluoxetine": "CNCCC(Oc1ccc(cc1)C(F)(F)F)c1ccccc1",  # C17H18F3NO, 40 atoms
}

LARGE = {  # name -> SMILES; fluoxetine (40 atoms) above is the smallest of this study
    "oseltamivir": "CCOC(=O)C1=C[C@@H](OC(CC)CC)[C@H](NC(C)=O)[C@@H](N)C1",  # C16H28N2O4, 50 atoms
    "tamoxifen": "CC/C(=C(\\c1ccccc1)c1ccc(OCCN(C)C)cc1)c1ccccc1",  # C26H29NO, 57 atoms
}

SETS = {"druglike": DRUGLIKE, "large": LARGE}


def embed(smiles: str, seed: int = 7):
    """RDKit molecule with hydrogens and one MMFF-relaxed conformer."""
    from rdkit import Chem
    from rdkit.Chem import AllChem
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    params = AllChem.ETKDGv3()
    params.randomSeed = seed
    if AllChem.EmbedMolecule(mol, params) != 0:
        raise RuntimeError(f"RDKit could not embed {smiles}")
    if AllChem.MMFFOptimizeMolecule(mol, maxIters=2000) != 0:
        raise RuntimeError(f"MMFF did not converge for {smiles}")
    return mol


def to_xyz(mol, title: str) -> str:
    conf = mol.GetConformer()
    lines = [str(mol.GetNumAtoms()), title]
    for atom in mol.GetAtoms():
        p = conf.GetAtomPosition(atom.GetIdx())
        lines.append(f"{atom.GetSymbol():2s} {p.x:14.8f} {p.y:14.8f} {p.z:14.8f}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--set", choices=sorted(SETS), default="druglike")
    p.add_argument("--out", default="benchmarks/molecules/druglike")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, smiles in SETS[args.set].items():
        mol = embed(smiles)
        (out / f"{name}.xyz").write_text(to_xyz(mol, f"{name} {smiles} RDKit ETKDGv3+MMFF94"))
        print(f"{name}: {mol.GetNumAtoms()} atoms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
