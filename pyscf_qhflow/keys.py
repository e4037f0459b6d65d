"""The data contract: every field of a molecule record and of a model batch.

Atomic units inside the package (Hartree, Bohr) except where a name says
otherwise; positions enter the network in Angstrom (``pos``) because its
cutoffs are quoted in Angstrom.  Matrices are in PySCF AO order when dense
and in padded e3nn order when cut into blocks (see :mod:`pyscf_qhflow.blocks`).

Per-molecule record (what :class:`pyscf_qhflow.data.dataset.ShardDataset` yields):

=================  ==================  =========  =========================================
key                shape               dtype      meaning
=================  ==================  =========  =========================================
``Z``              (natm,)             int64      atomic numbers
``pos``            (natm, 3)           float64    positions, Angstrom, PySCF frame
``fock``           (nao, nao)          float64    converged Fock matrix, Hartree, PySCF order
``hinit``          (nao, nao)          float64    Fock of the MinAO guess density, Hartree
``overlap``        (nao, nao)          float64    AO overlap S, PySCF order
``energy``         ()                  float64    converged total energy, Hartree
``qm9_index``      ()                  int64      QM9 index (-1 when not from QM9)
=================  ==================  =========  =========================================

Model batch (several molecules concatenated; N atoms, E graph edges, K pairs,
P padded slots per atom, B molecules):

=====================  ===============  =======  ==============================================
key                    shape            dtype    meaning
=====================  ===============  =======  ==============================================
``Z``                  [N]              int64    atomic numbers
``pos``                [N, 3]           float    Angstrom, PySCF frame
``batch``              [N]              int64    molecule of each atom (0..B-1)
``edge_index``         [2, E]           int64    backbone graph (radius cutoff), row 0 = source
                                                 j, row 1 = target i; both directions present
``pair_index``         [2, K]           int64    ordered atom pairs (i, j), i != j, within the
                                                 pair cutoff; (i, j) and (j, i) both present
``slot_mask``          [N, P]           bool     padded slots that hold a real AO
``hinit_onsite``       [N, P, P]        float    H_init on-site blocks, Hartree, e3nn order
``hinit_offsite``      [K, P, P]        float    H_init blocks for pair_index
``overlap_onsite``     [N, P, P]        float    S on-site blocks
``fock_onsite``        [N, P, P]        float    target F* on-site blocks (training only)
``fock_offsite``       [K, P, P]        float    target F* off-site blocks (training only)
``residual_onsite``    [N, P, P]        float    F* - H_init on-site, subtracted in float64
                                                 before the cast (training target)
``residual_offsite``   [K, P, P]        float    F* - H_init off-site, likewise
``xt_onsite``          [N, P, P]        float    flow state on-site blocks (residual units)
``xt_offsite``         [K, P, P]        float    flow state off-site blocks
``t``                  [B]              float    flow time in [0, 1]
=====================  ===============  =======  ==============================================
"""
from __future__ import annotations

Z = "Z"
POS = "pos"
FOCK = "fock"
HINIT = "hinit"
OVERLAP = "overlap"
ENERGY = "energy"
QM9_INDEX = "qm9_index"
BATCH = "batch"
EDGE_INDEX = "edge_index"
PAIR_INDEX = "pair_index"
SLOT_MASK = "slot_mask"
HINIT_ONSITE = "hinit_onsite"
HINIT_OFFSITE = "hinit_offsite"
OVERLAP_ONSITE = "overlap_onsite"
FOCK_ONSITE = "fock_onsite"
FOCK_OFFSITE = "fock_offsite"
RESIDUAL_ONSITE = "residual_onsite"
RESIDUAL_OFFSITE = "residual_offsite"
XT_ONSITE = "xt_onsite"
XT_OFFSITE = "xt_offsite"
T = "t"
