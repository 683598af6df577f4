"""The bonded priors (:class:`~openmm_cgkd.model.priors.BondedPriors`) as OpenMM's standard forces.

``HarmonicBondForce`` (E = k/2 (r - r0)^2), ``HarmonicAngleForce`` (E = k/2 (theta - theta0)^2)
and ``PeriodicTorsionForce`` (E = k (1 + cos(n phi - delta)), one term per Fourier term): the
same energies as the torch evaluation in training (:mod:`openmm_cgkd.model.priors_torch`).
Forces are named ``cgkd_prior_bonds``, ``cgkd_prior_angles`` and ``cgkd_prior_dihedrals``; they
use periodic boundary conditions (minimum-image bond vectors) when the system is periodic.
"""
from __future__ import annotations

import numpy as np

from openmm_cgkd.model.priors import BondedPriors

__all__ = ["make_prior_forces"]


def make_prior_forces(priors: BondedPriors, topology, bead_types, periodic: bool) -> list:
    """The OpenMM forces of ``priors`` on the bonds, angles and dihedrals of ``topology`` (a
    :class:`~openmm_cgkd.cgtopology.CGTopology` whose bead indices are the System's particle
    indices; ``bead_types[k]`` the type of particle k). Raises
    :class:`~openmm_cgkd.model.priors.PriorError` for a bonded tuple of types the priors lack."""
    import openmm

    types = np.asarray(bead_types, np.int64)
    forces = []
    if priors.bonds and topology.n_bonds:
        f = openmm.HarmonicBondForce()
        f.setName("cgkd_prior_bonds")
        for (i, j), (r0, k) in zip(topology.bonds.tolist(), priors.bond_parameters(topology.bonds, types).tolist()):
            f.addBond(int(i), int(j), float(r0), float(k))
        forces.append(f)
    if priors.angles and len(topology.angles):
        f = openmm.HarmonicAngleForce()
        f.setName("cgkd_prior_angles")
        for (i, j, k), (th0, kk) in zip(topology.angles.tolist(),
                                        priors.angle_parameters(topology.angles, types).tolist()):
            f.addAngle(int(i), int(j), int(k), float(th0), float(kk))
        forces.append(f)
    terms = priors.dihedral_terms(topology.dihedrals, types) if len(topology.dihedrals) else np.zeros((0, 7))
    if len(terms):
        f = openmm.PeriodicTorsionForce()
        f.setName("cgkd_prior_dihedrals")
        for i, j, k, l, n, kk, d in terms.tolist():
            f.addTorsion(int(i), int(j), int(k), int(l), int(n), float(d), float(kk))
        forces.append(f)
    for f in forces:
        f.setUsesPeriodicBoundaryConditions(bool(periodic))
    return forces
