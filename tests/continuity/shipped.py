"""What the continuity tests share: the shipped bundles with a recorded reference, and the check
of a model's outputs against it (models/<name>/continuity.npz)."""
import numpy as np

from openmm_cgkd.bundle import models_dir


def shipped_with_reference() -> list[str]:
    root = models_dir()
    return sorted(p.name for p in root.iterdir() if (p / "continuity.npz").is_file()) if root.is_dir() else []


def reference(name: str):
    return np.load(models_dir() / name / "continuity.npz")


def assert_reproduces_reference(model, ref) -> None:
    """``model(bead_types, positions nm, box nm)`` gives the recorded energy (kJ/mol), per-bead
    energies and forces (kJ/mol/nm) of ``ref``."""
    import torch

    out = model(torch.as_tensor(ref["bead_types"], dtype=torch.long),
                torch.as_tensor(ref["positions_nm"], dtype=torch.float32),
                torch.as_tensor(ref["box_nm"], dtype=torch.float32))
    np.testing.assert_allclose(float(out[0]), float(ref["energy_kj_mol"]), rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(out[1].detach().numpy(), ref["bead_energies_kj_mol"], rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(out[2].detach().numpy(), ref["forces_kj_mol_nm"], rtol=1e-4, atol=1e-2)


def reference_topology(ff, ref):
    """The bead topology of a reference input for force field ``ff``: with its box when the model
    is periodic, without one otherwise (a molecule's ``box_nm`` is recorded as zeros), and the
    bead bonds when recorded (a bonded model needs them)."""
    from openmm_cgkd.topology import bead_topology

    types = ff.bundle.manifest.bead_types
    names = [types[t].name for t in ref["bead_types"]]
    return bead_topology(names, ref["box_nm"] if ff.periodic else None,
                         residue_names={b.name: b.residue_name for b in types},
                         atom_names={b.name: b.atom_names[0] for b in types},
                         bonds=ref["bonds"] if "bonds" in ref.files else None)
