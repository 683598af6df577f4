"""Thermodynamic bookkeeping of an OpenMM system: degrees of freedom and the instantaneous
temperature from the kinetic energy (kJ/mol, K), the same way OpenMM's reporters count them."""
from __future__ import annotations

__all__ = ["MOLAR_GAS_CONSTANT_KJ", "degrees_of_freedom", "temperature_from_kinetic"]

MOLAR_GAS_CONSTANT_KJ = 0.00831446261815324  # kJ/mol/K


def degrees_of_freedom(system) -> int:
    """3N minus constraints minus 3 when a CMMotionRemover is present (as OpenMM's reporters);
    massless (fixed) particles do not count."""
    import openmm
    from openmm import unit

    dof = sum(3 for i in range(system.getNumParticles())
              if system.getParticleMass(i).value_in_unit(unit.dalton) > 0)
    dof -= system.getNumConstraints()
    if any(isinstance(system.getForce(i), openmm.CMMotionRemover) for i in range(system.getNumForces())):
        dof -= 3
    return dof


def temperature_from_kinetic(kinetic_kj_mol: float, dof: int) -> float:
    """Instantaneous temperature (K) of ``dof`` degrees of freedom holding ``kinetic_kj_mol``
    (kJ/mol); NaN when there are none."""
    return 2.0 * kinetic_kj_mol / (dof * MOLAR_GAS_CONSTANT_KJ) if dof > 0 else float("nan")
