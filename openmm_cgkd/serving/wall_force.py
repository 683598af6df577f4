"""The repulsive wall as an OpenMM ``CustomNonbondedForce``, read from :class:`WallParameters`.

For beads of types (i, j) at distance r below the cutoff, the force evaluates exactly the
energy of :meth:`WallParameters.pair_energy`::

    E(r) = A_ij * (exp(-a_ij * r) - exp(-a_ij * r_c))

written in an algebraically identical form that stays finite in single precision (the CUDA
platform evaluates custom forces in float32, and A_ij = s p e^{a t} / a reaches 1e26 or more for
a = 200/nm)::

    E(r) = C_ij * exp(-a_ij * (r - r0_ij)) - S_ij,   r0_ij = ln(A_ij) / a_ij,  C_ij = 1 kJ/mol,
                                                     S_ij = A_ij exp(-a_ij r_c)

(C_ij = S_ij = 0 for pairs without a wall). The per-pair values are tabulated
(``Discrete2DFunction``) and indexed by a per-bead parameter ``wall_type``; the cutoff is
periodic (``CutoffPeriodic``) or not (``CutoffNonPeriodic``), without switching function or
long-range correction.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from openmm_cgkd.model.wall import WallParameters

__all__ = ["make_wall_force", "wall_energy_expression", "WALL_FORCE_NAME"]

WALL_FORCE_NAME = "cgkd_wall"


def wall_energy_expression() -> str:
    return ("wall_C(wall_type1, wall_type2) * exp(-a * (r - wall_r0(wall_type1, wall_type2)))"
            " - wall_S(wall_type1, wall_type2);"
            " a = wall_a(wall_type1, wall_type2)")


def _stable_tables(wall: WallParameters) -> dict[str, np.ndarray]:
    A = wall.prefactor_kj_mol
    a = wall.decay_per_nm
    on = (A > 0) & (a > 0)
    with np.errstate(divide="ignore"):
        r0 = np.where(on, np.log(np.where(on, A, 1.0)) / np.where(on, a, 1.0), 0.0)
    C = np.where(on, 1.0, 0.0)
    S = np.where(on, np.exp(-a * (wall.cutoff_nm - r0)), 0.0)  # = A exp(-a r_c), computed without overflow
    return {"wall_C": C, "wall_r0": r0, "wall_a": np.where(on, a, 0.0), "wall_S": S}


def make_wall_force(wall: WallParameters, bead_types: Sequence[int], periodic: bool = True, exclusions=None):
    """A ``CustomNonbondedForce`` of the wall for beads whose type indices are ``bead_types``.

    ``bead_types[k]`` indexes ``wall.type_names``. ``exclusions`` [P, 2]: bead pairs the wall
    leaves out (bonded pairs, left to the bonded priors). The force is named ``cgkd_wall``.
    """
    import openmm

    types = np.asarray(bead_types, dtype=np.int64)
    if types.ndim != 1:
        raise ValueError(f"bead_types must be a 1-D sequence of type indices, got shape {types.shape}")
    if types.size and (types.min() < 0 or types.max() >= wall.n_types):
        raise ValueError(f"bead type indices must lie in [0, {wall.n_types}) for wall types "
                         f"{wall.type_names}; got range [{types.min()}, {types.max()}]")
    t = wall.n_types
    force = openmm.CustomNonbondedForce(wall_energy_expression())
    force.setName(WALL_FORCE_NAME)
    for name, table in _stable_tables(wall).items():
        # Discrete2DFunction values: x (first argument) varies fastest; the tables are symmetric.
        force.addTabulatedFunction(name, openmm.Discrete2DFunction(t, t, table.T.ravel().tolist()))
    force.addPerParticleParameter("wall_type")
    for k in types:
        force.addParticle([float(k)])
    for i, j in (np.zeros((0, 2), np.int64) if exclusions is None else np.asarray(exclusions, np.int64)).tolist():
        force.addExclusion(int(i), int(j))
    force.setNonbondedMethod(openmm.CustomNonbondedForce.CutoffPeriodic if periodic
                             else openmm.CustomNonbondedForce.CutoffNonPeriodic)
    force.setCutoffDistance(wall.cutoff_nm)
    force.setUseSwitchingFunction(False)
    force.setUseLongRangeCorrection(False)
    return force
