"""The residual's distance switch (pyscf_qhflow.residual_range)."""
import numpy as np
import pytest

from pyscf_qhflow.aolayout import ao_atom_indices
from pyscf_qhflow.residual_range import distance_switch, limit_residual_range


def test_switch_is_one_inside_zero_outside_and_smooth():
    d = np.array([0.0, 1.0, 4.0, 4.5, 5.0, 5.5, 6.0, 9.0])
    w = distance_switch(d, 4.0, 6.0)
    np.testing.assert_allclose(w[:3], 1.0)
    np.testing.assert_allclose(w[-2:], 0.0)
    assert w[4] == pytest.approx(0.5) and np.all(np.diff(w) <= 0)
    for bad in [(6.0, 4.0), (0.0, 2.0), (3.0, 3.0)]:
        with pytest.raises(ValueError, match="0 < r_on < r_off"):
            distance_switch(d, *bad)


def test_far_pairs_keep_no_residual_near_pairs_keep_all(ethanol):
    """Blocks of pairs beyond r_off vanish, within r_on and on-site are unchanged."""
    rng = np.random.default_rng(0)
    r = rng.normal(size=(ethanol.nao, ethanol.nao))
    r = r + r.T
    pos = ethanol.atom_coords(unit="Angstrom")
    ao_atom = ao_atom_indices(ethanol)
    assert len(ao_atom) == ethanol.nao
    limited = limit_residual_range(r, pos, ao_atom, 1.2, 2.0)
    np.testing.assert_array_equal(limited, limited.T)
    dist = np.linalg.norm(pos[ao_atom][:, None] - pos[ao_atom][None], axis=-1)
    far, near = dist >= 2.0, dist <= 1.2
    assert far.any() and (near & (dist > 0)).any()
    np.testing.assert_array_equal(limited[far], 0.0)
    np.testing.assert_array_equal(limited[near], r[near])


def test_model_applies_its_residual_range_and_config_keeps_it(ethanol):
    from pyscf_qhflow.hinit import minao_fock
    from pyscf_qhflow.model import ModelConfig, QHFlowModel
    model = QHFlowModel.from_config("tiny", seed=0).double()
    model.set_min_gap_ratio(0.0)  # the untrained model's gap would trigger the gap guard
    hinit = minao_fock(ethanol, xc=model.xc)
    plain = model.predict_fock(ethanol, hinit=hinit)
    model.set_residual_range((1.2, 2.0))
    limited = model.predict_fock(ethanol, hinit=hinit)
    expected = hinit + limit_residual_range(plain - hinit, ethanol.atom_coords(unit="Angstrom"),
                                            ao_atom_indices(ethanol), 1.2, 2.0)
    np.testing.assert_allclose(limited, expected, atol=1e-12)
    assert np.abs(limited - plain).max() > 1e-6  # the switch changed something
    cfg = ModelConfig.from_dict(model.config.to_dict())
    assert cfg.residual_range == (1.2, 2.0)
    with pytest.raises(ValueError, match="residual_range"):
        ModelConfig.from_dict({**model.config.to_dict(), "residual_range": [3.0, 2.0]})
