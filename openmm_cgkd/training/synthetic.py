"""A synthetic CG system whose true mean force is known: the test bed of the training module.

Beads of a few types interact by a known pair potential per type pair: Lennard-Jones
(``form="lj"``, the default) or a soft repulsion (``form="soft"``), with a switch to zero at
``cutoff_nm``. OpenMM samples the Boltzmann distribution with Langevin
dynamics; every saved frame keeps the exact force -dU/dR (the "true" mean force, what a
perfect CG model would learn) and the label is that force plus Gaussian noise, standing in
for the mapping noise of real AA data. Because the noise has zero mean at every
configuration, the conditional mean of the labels is exactly the true force, as in the CG
force-matching setting (docs/METHOD.md sections 1 and 7).

:func:`make_synthetic_system` returns a :class:`SyntheticSystem`: the :class:`CGDataset`
(its ``forces`` are the noisy labels) plus the true forces, energies and per-bead energies
(each bead carries half of each of its pair energies).

Units: nm, ps, kJ/mol, kJ/mol/nm, dalton, kelvin.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from openmm_cgkd.data.dataset import CGDataset

__all__ = ["PairPotential", "SyntheticSystem", "make_synthetic_system", "DEFAULT_PAIR_POTENTIAL",
           "SOFT_PAIR_POTENTIAL", "PAIR_FORMS"]

# OpenMM energy expressions of the pair forms (sig, eps: the pair's tabulated parameters)
PAIR_FORMS = {
    "lj": "4*eps*((sig/r)^12 - (sig/r)^6)",
    "soft": "eps*(1 - r/sig)^2*step(sig - r)",
}


@dataclass
class PairPotential:
    """A pair potential per type pair, times a switch from ``switch_nm`` to ``cutoff_nm``.

    ``form="lj"``: U_ij(r) = 4 eps_ij [(sig_ij/r)^12 - (sig_ij/r)^6];
    ``form="soft"``: U_ij(r) = eps_ij (1 - r/sig_ij)^2 for r < sig_ij, else 0 (a soft, finite
    repulsion of range sig_ij, as in dissipative particle dynamics). sig in nm, eps in kJ/mol.
    """

    type_names: list[str]
    sigma_nm: np.ndarray  # (T, T)
    epsilon_kj_mol: np.ndarray  # (T, T)
    masses_dalton: np.ndarray  # (T,)
    cutoff_nm: float = 0.8
    switch_nm: float = 0.65
    form: str = "lj"

    def __post_init__(self) -> None:
        if self.form not in PAIR_FORMS:
            raise ValueError(f"form must be one of {sorted(PAIR_FORMS)}, got {self.form!r}")
        self.sigma_nm = np.asarray(self.sigma_nm, dtype=np.float64)
        self.epsilon_kj_mol = np.asarray(self.epsilon_kj_mol, dtype=np.float64)
        self.masses_dalton = np.asarray(self.masses_dalton, dtype=np.float64)
        t = len(self.type_names)
        for name in ("sigma_nm", "epsilon_kj_mol"):
            m = getattr(self, name)
            if m.shape != (t, t) or not np.allclose(m, m.T):
                raise ValueError(f"{name} must be a symmetric {t}x{t} matrix")
        if self.masses_dalton.shape != (t,) or np.any(self.masses_dalton <= 0):
            raise ValueError(f"masses_dalton must hold {t} positive masses")
        if not 0 < self.switch_nm < self.cutoff_nm:
            raise ValueError("need 0 < switch_nm < cutoff_nm")

    def switch(self, r: np.ndarray) -> np.ndarray:
        """OpenMM's switching function: 1 below switch, 0 above cutoff, C2-smooth in between."""
        x = np.clip((r - self.switch_nm) / (self.cutoff_nm - self.switch_nm), 0.0, 1.0)
        return 1.0 - 10.0 * x**3 + 15.0 * x**4 - 6.0 * x**5

    def pair_energy(self, r_nm: np.ndarray, type_i, type_j) -> np.ndarray:
        """Pair energy (kJ/mol) at distances r (nm); zero at and beyond the cutoff."""
        r = np.asarray(r_nm, dtype=np.float64)
        s = self.sigma_nm[type_i, type_j]
        e = self.epsilon_kj_mol[type_i, type_j]
        if self.form == "soft":
            u = e * np.clip(1.0 - r / s, 0.0, None) ** 2
        else:
            sr6 = (s / r) ** 6
            u = 4.0 * e * (sr6 * sr6 - sr6)
        return np.where(r < self.cutoff_nm, u * self.switch(r), 0.0)


# Two bead types, a dense LJ liquid at 300 K (kT = 2.49 kJ/mol).
DEFAULT_PAIR_POTENTIAL = PairPotential(
    type_names=["A", "B"],
    sigma_nm=[[0.30, 0.33], [0.33, 0.36]],
    epsilon_kj_mol=[[1.2, 1.8], [1.8, 1.0]],
    masses_dalton=[40.0, 60.0],
)


# Three bead types with soft repulsions of different ranges and strengths (kT = 2.49 kJ/mol at
# 300 K): a dense fluid whose forces a small network can represent, so that the error left after
# training is mostly what the label noise leaves (docs/METHOD.md section 7). With no hard core,
# beads occasionally come closer than in any training frame: train such a system without the
# repulsive wall (``WallFitConfig(enabled=False)``), which is fitted to the closest contacts seen.
SOFT_PAIR_POTENTIAL = PairPotential(
    type_names=["A", "B", "C"],
    sigma_nm=[[0.50, 0.55, 0.45], [0.55, 0.60, 0.50], [0.45, 0.50, 0.40]],
    epsilon_kj_mol=[[30.0, 45.0, 20.0], [45.0, 30.0, 35.0], [20.0, 35.0, 25.0]],
    masses_dalton=[40.0, 60.0, 30.0],
    cutoff_nm=0.6, switch_nm=0.6 - 1e-6, form="soft",
)


@dataclass
class SyntheticSystem:
    """A sampled synthetic system: noisy labels in ``dataset.forces``, truth beside them."""

    dataset: CGDataset
    true_forces: np.ndarray  # (F, N, 3) kJ/mol/nm, -dU/dR
    true_energy: np.ndarray  # (F,) kJ/mol
    true_bead_energies: np.ndarray  # (F, N) kJ/mol, half of each pair energy per bead
    noise_sigma: float  # kJ/mol/nm, per component
    potential: PairPotential
    info: dict = field(default_factory=dict)


def make_synthetic_system(n_beads: tuple[int, ...] | list[int] = (32, 32), box_nm: float = 1.9,
                          n_frames: int = 300, noise_ratio: float = 1.5, temperature_k: float = 300.0,
                          steps_per_frame: int = 50, equilibration_steps: int = 2000,
                          timestep_ps: float = 0.004, friction_per_ps: float = 1.0,
                          potential: PairPotential | None = None, seed: int = 0) -> SyntheticSystem:
    """Sample ``n_frames`` configurations of ``n_beads[t]`` beads of each type in a cubic box.

    The label noise is Gaussian with a standard deviation per force component of
    ``noise_ratio`` times the RMS of the true force components (so ``noise_ratio >= 1`` means the
    noise is at least as large as the signal). Runs on OpenMM's CPU platform (a few seconds for
    a few hundred frames of ~64 beads); the result depends only on the arguments.
    """
    import openmm
    from openmm import unit

    pot = potential or DEFAULT_PAIR_POTENTIAL
    counts = [int(n) for n in n_beads]
    if len(counts) != len(pot.type_names) or min(counts) < 0 or sum(counts) < 2:
        raise ValueError(f"n_beads needs one count per type {pot.type_names}, got {counts}")
    if box_nm < 2 * pot.cutoff_nm:
        raise ValueError(f"box {box_nm} nm is shorter than twice the pair cutoff {pot.cutoff_nm} nm")
    if noise_ratio < 0:
        raise ValueError("noise_ratio must be >= 0")
    types = np.repeat(np.arange(len(counts)), counts).astype(np.int32)
    n = len(types)
    rng = np.random.default_rng(seed)

    system = openmm.System()
    box = np.eye(3) * box_nm
    system.setDefaultPeriodicBoxVectors(*[openmm.Vec3(*row) for row in box])
    for t in types:
        system.addParticle(float(pot.masses_dalton[t]))
    force = openmm.CustomNonbondedForce(f"{PAIR_FORMS[pot.form]}; sig = sigtab(t1, t2); eps = epstab(t1, t2)")
    nt = len(counts)
    force.addTabulatedFunction("sigtab", openmm.Discrete2DFunction(nt, nt, pot.sigma_nm.T.ravel().tolist()))
    force.addTabulatedFunction("epstab", openmm.Discrete2DFunction(nt, nt, pot.epsilon_kj_mol.T.ravel().tolist()))
    force.addPerParticleParameter("t")
    for t in types:
        force.addParticle([float(t)])
    force.setNonbondedMethod(openmm.CustomNonbondedForce.CutoffPeriodic)
    force.setCutoffDistance(pot.cutoff_nm)
    force.setUseSwitchingFunction(True)
    force.setSwitchingDistance(pot.switch_nm)
    force.setUseLongRangeCorrection(False)
    system.addForce(force)

    # Start on a jittered cubic lattice so that no pair starts inside the repulsive core.
    side = int(np.ceil(n ** (1 / 3)))
    grid = np.stack(np.meshgrid(*[np.arange(side)] * 3, indexing="ij"), -1).reshape(-1, 3)[:n]
    pos = (grid + 0.5) * (box_nm / side) + rng.normal(0, 0.01, (n, 3))
    order = rng.permutation(n)
    pos = pos[order]

    integrator = openmm.LangevinMiddleIntegrator(temperature_k, friction_per_ps, timestep_ps)
    integrator.setRandomNumberSeed(int(rng.integers(1, 2**31 - 1)))
    platform = openmm.Platform.getPlatformByName("CPU")
    context = openmm.Context(system, integrator, platform, {"Threads": "1"})
    context.setPositions(pos * unit.nanometer)
    openmm.LocalEnergyMinimizer.minimize(context, 1.0, 200)
    context.setVelocitiesToTemperature(temperature_k, int(rng.integers(1, 2**31 - 1)))
    integrator.step(equilibration_steps)

    positions = np.empty((n_frames, n, 3))
    true_forces = np.empty((n_frames, n, 3))
    true_energy = np.empty(n_frames)
    for f in range(n_frames):
        integrator.step(steps_per_frame)
        state = context.getState(getPositions=True, getForces=True, getEnergy=True, enforcePeriodicBox=True)
        positions[f] = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        true_forces[f] = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
        true_energy[f] = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)

    bead_energies = _bead_energies(positions, types, box_nm, pot)
    signal_rms = float(np.sqrt(np.mean(true_forces**2)))
    sigma = noise_ratio * signal_rms
    labels = true_forces + rng.normal(0.0, sigma, true_forces.shape)
    times = (np.arange(n_frames) + 1) * steps_per_frame * timestep_ps
    provenance = {
        "source": "openmm_cgkd.training.synthetic", "seed": seed, "n_beads": counts, "box_nm": box_nm,
        "temperature_k": temperature_k, "noise_ratio": noise_ratio, "noise_sigma_kj_mol_nm": sigma,
        "signal_rms_kj_mol_nm": signal_rms,
        "potential": {"form": pot.form, "sigma_nm": pot.sigma_nm.tolist(), "epsilon_kj_mol": pot.epsilon_kj_mol.tolist(),
                      "cutoff_nm": pot.cutoff_nm, "switch_nm": pot.switch_nm},
    }
    dataset = CGDataset(positions=positions, forces=labels, boxes=np.repeat(box[None], n_frames, 0), times=times,
                        bead_types=types, type_names=list(pot.type_names), masses=pot.masses_dalton[types],
                        provenance=provenance, temperature_K=temperature_k)
    return SyntheticSystem(dataset, true_forces.astype(np.float32), true_energy, bead_energies, sigma, pot,
                           {"signal_rms_kj_mol_nm": signal_rms})


def _bead_energies(positions: np.ndarray, types: np.ndarray, box_nm: float, pot: PairPotential) -> np.ndarray:
    """Per-bead energies (F, N): half of every pair energy within the cutoff (cubic box, minimum image)."""
    out = np.empty(positions.shape[:2])
    ti, tj = types[:, None], types[None, :]
    for f, x in enumerate(positions):
        d = x[:, None, :] - x[None, :, :]
        d -= box_nm * np.round(d / box_nm)
        r = np.linalg.norm(d, axis=-1)
        np.fill_diagonal(r, np.inf)
        out[f] = 0.5 * pot.pair_energy(r, ti, tj).sum(axis=1)
    return out
