"""The radial basis must see the whole cutoff range in nm (torchmd-net's expnorm does not)."""
import pytest
import torch

from openmm_cgkd.model.potential import PotentialConfig, load_model_config, model_config_names


@pytest.mark.parametrize("name", model_config_names())
def test_shipped_configs_resolve_distances_up_to_the_cutoff(name):
    from torchmdnet.models.utils import rbf_class_mapping

    cfg = load_model_config(name)
    rbf = rbf_class_mapping[cfg.rbf_type](cfg.cutoff_lower_nm, cfg.cutoff_nm, cfg.num_rbf, cfg.trainable_rbf)
    d = torch.linspace(0.3, 0.8 * cfg.cutoff_nm, 20)  # bead distances in a liquid, nm
    assert rbf(d).max(dim=1).values.min() > 0.5  # some basis function responds at every distance


def test_default_basis_is_gauss():
    assert PotentialConfig().rbf_type == "gauss"
