"""Fit the bonded priors (:class:`~openmm_cgkd.model.priors.BondedPriors`) from the mapped frames
by Boltzmann inversion at the data's temperature T (kT = R T, R = 0.0083144626 kJ/mol/K).

Per bead-type tuple, over every bond / angle / dihedral of those types in the frames:

* bonds: the histogram p(r) of the distance; the potential of mean force is
  U(r) = -kT ln(p(r) / r^2) (the r^2 Jacobian of a distance in 3-D); a least-squares parabola
  through U (weighted by the counts per bin) gives U = k/2 (r - r0)^2 + c;
* angles: U(theta) = -kT ln(p(theta) / sin(theta)) (the sin Jacobian), the same parabola in
  theta (rad) gives (theta0, k);
* dihedrals: U(phi) = -kT ln p(phi) (no Jacobian), fitted (weighted least squares) by the
  Fourier series c + sum_n (a_n cos n phi + b_n sin n phi), n = 1..M, rewritten as
  k_n (1 + cos(n phi - delta_n)) with k_n = sqrt(a_n^2 + b_n^2), delta_n = atan2(b_n, a_n).

A parabola that opens downwards (a flat or multi-modal distribution) falls back to the moments
of the Jacobian-corrected density q(x) = p(x) / J(x): centre = its mean, k = kT / its variance
(the report says so); a harmonic prior sampled with that Jacobian has about those moments. These are priors, not the
final force field: the network learns what they leave.
"""
from __future__ import annotations

import numpy as np

from openmm_cgkd.data.dataset import CGDataset
from openmm_cgkd.model.priors import BondedPriors, bond_geometry, canonical
from openmm_cgkd.training.config import ConfigError, PriorFitConfig

__all__ = ["fit_priors", "boltzmann_harmonic", "boltzmann_fourier", "dataset_temperature", "R_KJ_MOL_K",
           "tuple_values"]

R_KJ_MOL_K = 0.0083144626181532  # molar gas constant, kJ/mol/K


def dataset_temperature(dataset: CGDataset, override: float | None = None) -> float:
    """The temperature (K) the data were sampled at: ``override`` when given, else the dataset's own
    record (``CGDataset.temperature_K``, or the provenance of its AA run); :class:`ConfigError`
    when neither says."""
    if override is not None:
        return float(override)
    t = dataset.temperature_K
    prov = dataset.provenance or {}
    if t is None:
        t = prov.get("temperature_k") or prov.get("temperature_K")
    if t is None and isinstance(prov.get("protocol"), dict):
        t = prov["protocol"].get("temperature_K")
    if t is None:
        raise ConfigError("the bonded priors are fitted at the data's temperature, but the dataset does not record "
                          "it: set priors.temperature_K in the training config (K)")
    return float(t)


def tuple_values(dataset: CGDataset, index: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """[F, M] distances (nm), angles or dihedrals (rad) of the bead tuples ``index`` over ``frames``."""
    periodic = dataset.periodic
    return np.stack([bond_geometry(dataset.positions[f].astype(np.float64), index,
                                   dataset.boxes[f].astype(np.float64) if periodic else None) for f in frames])


def boltzmann_harmonic(values: np.ndarray, kt: float, jacobian: str, bins: int = 60) -> tuple[float, float, str]:
    """(centre, k, method) of U = k/2 (x - centre)^2 fitted to -kT ln(p(x)/J(x)), J = x^2 (``"r2"``)
    or sin x (``"sin"``); method ``"boltzmann-inversion"`` or ``"moments"`` (the fallback)."""
    x = np.asarray(values, np.float64).ravel()
    mean, var = float(x.mean()), float(x.var())
    if var <= 0:
        raise ConfigError(f"a bonded coordinate does not fluctuate (value {mean:g} in every frame): cannot fit a prior")
    sd = np.sqrt(var)
    lo, hi = max(mean - 3 * sd, float(x.min())), min(mean + 3 * sd, float(x.max()))
    counts, edges = np.histogram(x, bins=bins, range=(lo, hi))
    c = 0.5 * (edges[1:] + edges[:-1])
    jac = c ** 2 if jacobian == "r2" else np.sin(c)
    ok = (counts > 0) & (jac > 0)
    if ok.sum() >= 3:
        u = -kt * np.log(counts[ok] / jac[ok])
        a2, a1, _ = np.polyfit(c[ok], u, 2, w=np.sqrt(counts[ok]))
        if a2 > 0:
            return float(-a1 / (2 * a2)), float(2 * a2), "boltzmann-inversion"
    # fallback: the moments of the Jacobian-corrected density q(x) = p(x) / J(x) over the whole range,
    # which a harmonic prior sampled with that Jacobian reproduces (J floored to keep 180 deg finite)
    counts, edges = np.histogram(x, bins=bins)
    c = 0.5 * (edges[1:] + edges[:-1])
    jac = c ** 2 if jacobian == "r2" else np.sin(c)
    q = counts / np.maximum(jac, 0.05 * jac.max())
    centre = float(np.sum(q * c) / np.sum(q))
    var_q = float(np.sum(q * (c - centre) ** 2) / np.sum(q))
    return centre, kt / max(var_q, 1e-12), "moments"


def boltzmann_fourier(values: np.ndarray, kt: float, n_terms: int, bins: int = 36) -> list[tuple[int, float, float]]:
    """[(n, k_n kJ/mol, delta_n rad)] of sum_n k_n (1 + cos(n phi - delta_n)) fitted to -kT ln p(phi)."""
    phi = np.asarray(values, np.float64).ravel()
    counts, edges = np.histogram(phi, bins=bins, range=(-np.pi, np.pi))
    c = 0.5 * (edges[1:] + edges[:-1])
    ok = counts > 0
    u = -kt * np.log(counts[ok] / counts.sum())
    cols = [np.ones(ok.sum())]
    for n in range(1, n_terms + 1):
        cols += [np.cos(n * c[ok]), np.sin(n * c[ok])]
    a = np.stack(cols, 1)
    w = np.sqrt(counts[ok])
    coef, *_ = np.linalg.lstsq(a * w[:, None], u * w, rcond=None)
    out = []
    for n in range(1, n_terms + 1):
        an, bn = coef[2 * n - 1], coef[2 * n]
        out.append((n, float(np.hypot(an, bn)), float(np.arctan2(bn, an))))
    return out


def _by_type(index: np.ndarray, bead_types: np.ndarray) -> dict[tuple, np.ndarray]:
    groups: dict[tuple, list[int]] = {}
    for m, row in enumerate(np.asarray(index, np.int64)):
        groups.setdefault(canonical(tuple(bead_types[row])), []).append(m)
    return {k: np.asarray(v) for k, v in groups.items()}


def fit_priors(dataset: CGDataset, frames: np.ndarray | None = None,
               config: PriorFitConfig | None = None) -> tuple[BondedPriors | None, dict]:
    """Bonded priors fitted on ``frames`` (default all) and a JSON-able report. ``(None, report)``
    when no bead is bonded and the config does not ask for priors; priors without terms (only the
    exclusions, which the wall needs for bonded beads) when the config turns them off."""
    cfg = config or PriorFitConfig()
    topo = dataset.topology
    if not topo.has_bonds:
        if cfg.enabled is True:
            raise ConfigError("priors.enabled is true but no bead of the dataset is bonded (one-bead molecules, or a "
                              "dataset mapped without AA bonds)")
        return None, {"method": "none", "reason": "no bonded beads"}
    if cfg.enabled is False:
        return (BondedPriors(list(dataset.type_names), exclusions=cfg.exclusions),
                {"method": "disabled: no bonded terms; the wall still leaves out bonded pairs",
                 "exclusions": cfg.exclusions})
    frames = np.arange(dataset.n_frames) if frames is None else np.asarray(frames)
    if len(frames) > cfg.max_frames:
        frames = frames[np.linspace(0, len(frames) - 1, cfg.max_frames).round().astype(int)]
    temperature = dataset_temperature(dataset, cfg.temperature_K)
    kt = R_KJ_MOL_K * temperature
    names, types = list(dataset.type_names), dataset.bead_types
    label = lambda key: "-".join(names[k] for k in key)  # noqa: E731
    report = {"method": "Boltzmann inversion (docs/molecules.md): bonds with the r^2 Jacobian, angles with sin(theta)",
              "temperature_k": temperature, "frames_used": int(len(frames)), "bonds": {}, "angles": {},
              "dihedrals": {}}
    bonds, angles, dihedrals = {}, {}, {}
    for key, rows in _by_type(topo.bonds, types).items():
        r0, k, how = boltzmann_harmonic(tuple_values(dataset, topo.bonds[rows], frames), kt, "r2", cfg.bins)
        bonds[key] = (r0, k)
        report["bonds"][label(key)] = {"r0_nm": r0, "k_kj_mol_nm2": k, "fit": how, "count": int(len(rows))}
    if cfg.angles and len(topo.angles):
        for key, rows in _by_type(topo.angles, types).items():
            th0, k, how = boltzmann_harmonic(tuple_values(dataset, topo.angles[rows], frames), kt, "sin", cfg.bins)
            th0 = float(np.clip(th0, 0.0, np.pi))
            angles[key] = (th0, k)
            report["angles"][label(key)] = {"theta0_deg": float(np.degrees(th0)), "k_kj_mol_rad2": k, "fit": how,
                                            "count": int(len(rows))}
    if cfg.dihedral_terms > 0 and len(topo.dihedrals):
        for key, rows in _by_type(topo.dihedrals, types).items():
            values = tuple_values(dataset, topo.dihedrals[rows], frames)
            # a quadruplet stored against its canonical type direction has the same phi (reversal keeps phi)
            terms = boltzmann_fourier(values, kt, cfg.dihedral_terms)
            dihedrals[key] = terms
            report["dihedrals"][label(key)] = {"terms": [{"n": n, "k_kj_mol": kk, "delta_rad": d} for n, kk, d in terms],
                                               "count": int(len(rows))}
    priors = BondedPriors(names, bonds, angles, dihedrals, cfg.exclusions, temperature)
    return priors, report
