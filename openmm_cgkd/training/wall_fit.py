"""Fit the repulsive wall per bead-type pair from the training frames (docs/METHOD.md section 3).

Per pair (i, j) of bead types:

* taper t_ij (nm): the smallest r at which the RDF g_ij(r) of the frames exceeds
  ``rdf_threshold`` (0.01; r is the centre of the first such histogram bin);
* force scale s_ij (kJ/mol/nm): the mean of s_i and s_j, where s_t is the mean magnitude of
  the mapped force on beads of type t;

then :meth:`WallParameters.from_taper` turns (t, s) into the wall, so that its pair force is
p*s at r = t and s at r = t - dr. A pair that never comes within the RDF range (for instance a
type with a single bead has no same-type pairs) gets the smallest taper of the pairs that do;
the fit report says which pairs fell back.

The RDFs are those of the pairs the wall will act on: every pair except those at most
``exclusions`` bonds apart (the bonded priors' exclusions, which the wall leaves out; 2 by
default: 1-2 and 1-3), so intermolecular pairs and, in molecules, intramolecular pairs further
apart. A fit on other pairs than the wall acts on puts the wall where the data go: fitted on the
dipeptide's 1-5 pair alone and acting on its 1-4 pairs, which the AA brings to 0.257 nm, the
wall gave 726 kJ/mol and 145,000 kJ/mol/nm on AA frames, and the networks learned to cancel it.
Where a molecule's 1-4 pairs come closer than its other contacts and that should not soften the
wall, leave them to the dihedral priors (``priors.exclusions: 3``). With no pair to act on, there
is no wall.
"""
from __future__ import annotations

import warnings

import numpy as np

from openmm_cgkd.data.dataset import CGDataset, DatasetError
from openmm_cgkd.errors import CGKDWarning
from openmm_cgkd.model.wall import WallParameters
from openmm_cgkd.training.config import WallFitConfig
from openmm_cgkd.training.prior_fit import R_KJ_MOL_K

__all__ = ["pair_rdfs", "contact_distance_nm", "fit_wall", "WALL_FIT_PAIRS"]

# which pairs the fit of bonded beads uses, in the set-up's and the pipeline's keys (before
# 2026-12-08: intermolecular pairs, or a single molecule's pairs more than 3 bonds apart)
WALL_FIT_PAIRS = "the pairs the wall acts on: beyond the priors' exclusions"
WALL_DATA_LIMIT_KT = 10.0  # a fitted wall above this at the data's closest contact of a pair is warned about


def pair_rdfs(dataset: CGDataset, frames: np.ndarray | None = None, bin_nm: float = 0.002,
              r_max_nm: float | None = None,
              exclusions: int | None = 2) -> tuple[np.ndarray, dict[tuple[int, int], np.ndarray]]:
    """RDFs g_ij(r) of every bead-type pair present, over ``frames`` (minimum image), of the bead
    pairs more than ``exclusions`` bonds apart (0-3; None or 0: every pair, bonded ones too).

    Returns (bin centres (nm), {(i, j): g(r)} for i <= j). ``r_max_nm`` defaults to half the
    smallest box width of the frames (2 nm without a box).
    """
    import mdtraj as md

    from openmm_cgkd.topology import dataset_trajectory

    frames = np.arange(dataset.n_frames) if frames is None else np.asarray(frames)
    traj = dataset_trajectory(dataset, frames)
    if r_max_nm is None and dataset.periodic:
        widths = np.abs(np.stack([dataset.boxes[frames, k, k] for k in range(3)], 1))
        r_max_nm = 0.5 * float(widths.min())
    elif r_max_nm is None:
        r_max_nm = 2.0
    types = dataset.bead_types
    n = dataset.n_beads
    near = dataset.topology.excluded_pairs(exclusions) if exclusions else np.zeros((0, 2), np.int64)
    near_keys = near[:, 0] * n + near[:, 1]
    centres, rdfs = None, {}
    for i in range(len(dataset.type_names)):
        for j in range(i, len(dataset.type_names)):
            a, b = np.flatnonzero(types == i), np.flatnonzero(types == j)
            pairs = (np.array([(x, y) for k, x in enumerate(a) for y in a[k + 1:]]) if i == j
                     else np.array(np.meshgrid(a, b, indexing="ij")).reshape(2, -1).T)
            if len(pairs) and len(near_keys):
                keys = pairs.min(1) * n + pairs.max(1)
                pairs = pairs[~np.isin(keys, near_keys)]
            if len(pairs) == 0:
                continue
            if dataset.periodic:
                r, g = md.compute_rdf(traj, pairs, r_range=(0.0, r_max_nm), bin_width=bin_nm)
            else:  # no box: normalised to the sphere of radius r_max (only the contact distance matters)
                d = md.compute_distances(traj, pairs, periodic=False).ravel()
                edges = np.arange(0.0, r_max_nm + 0.5 * bin_nm, bin_nm)
                counts, _ = np.histogram(d, edges)
                r = 0.5 * (edges[1:] + edges[:-1])
                shell = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
                g = counts / (len(d) * shell / (4.0 / 3.0 * np.pi * r_max_nm ** 3))
            centres = r
            rdfs[(i, j)] = g
    if centres is None:
        raise DatasetError("the dataset has no bead pairs to build RDFs from")
    return centres, rdfs


def contact_distance_nm(r_nm: np.ndarray, g: np.ndarray, threshold: float) -> float | None:
    """The smallest r (nm, a bin centre of ``r_nm``) at which ``g`` exceeds ``threshold``; None
    when it never does. The wall's taper is this distance of the training frames' g(r)."""
    above = np.flatnonzero(np.asarray(g) > threshold)
    return float(r_nm[above[0]]) if len(above) else None


def fit_wall(dataset: CGDataset, frames: np.ndarray | None = None,
             config: WallFitConfig | None = None, exclusions: int = 2) -> tuple[WallParameters, dict]:
    """Wall parameters fitted on ``frames`` (default all) and a JSON-able report of the fit, on
    the pairs the wall acts on: those more than ``exclusions`` bonds apart (the bonded priors'
    exclusions; beads without bonds: every pair)."""
    cfg = config or WallFitConfig()
    frames = np.arange(dataset.n_frames) if frames is None else np.asarray(frames)
    if len(frames) > cfg.max_frames:
        frames = frames[np.linspace(0, len(frames) - 1, cfg.max_frames).round().astype(int)]
    n_types = len(dataset.type_names)
    try:
        r, rdfs = pair_rdfs(dataset, frames, cfg.bin_nm, exclusions=exclusions)
    except DatasetError:
        if dataset.topology.n_molecules != 1:
            raise
        return WallParameters.zero(list(dataset.type_names)), {
            "method": f"none: a single molecule without pairs more than {exclusions} bonds apart (nothing for a "
                      "wall to act on)", "exclusions": exclusions}

    force_mag = np.linalg.norm(dataset.forces[frames], axis=-1)  # (F, N)
    s_type = np.array([force_mag[:, dataset.bead_types == t].mean() if np.any(dataset.bead_types == t) else np.nan
                       for t in range(n_types)])
    if np.any(~np.isfinite(s_type)):
        missing = [dataset.type_names[t] for t in np.flatnonzero(~np.isfinite(s_type))]
        raise DatasetError(f"no bead of type(s) {missing} in the dataset: cannot fit their wall")

    taper = np.full((n_types, n_types), np.nan)
    for (i, j), g in rdfs.items():
        contact = contact_distance_nm(r, g, cfg.rdf_threshold)
        if contact is not None:
            taper[i, j] = taper[j, i] = contact
    fell_back = [f"{dataset.type_names[i]}-{dataset.type_names[j]}"
                 for i in range(n_types) for j in range(i, n_types) if not np.isfinite(taper[i, j])]
    if np.all(~np.isfinite(taper)):
        raise DatasetError(f"no RDF exceeds {cfg.rdf_threshold} within {r[-1]:.3f} nm: cannot place the wall")
    taper = np.where(np.isfinite(taper), taper, np.nanmin(taper))
    scale = 0.5 * (s_type[:, None] + s_type[None, :])
    wall = WallParameters.from_taper(list(dataset.type_names), taper, scale, width_nm=cfg.width_nm,
                                     fraction=cfg.fraction, cutoff_nm=cfg.cutoff_nm)
    closest = {}  # per fitted pair: the closest distance of the frames (lower bin edge, nm) and the wall there
    for (i, j), g in rdfs.items():
        first = contact_distance_nm(r, g, 0.0)  # the first bin holding a pair
        if first is not None:
            r0 = max(first - 0.5 * cfg.bin_nm, 0.0)
            closest[f"{dataset.type_names[i]}-{dataset.type_names[j]}"] = (r0, float(wall.pair_energy(r0, i, j)))
    report = {
        "method": "docs/METHOD.md section 3: taper = first r with g(r) > threshold (the pairs the wall acts on: "
                  "more than `exclusions` bonds apart); s_ij = (s_i + s_j) / 2", "exclusions": exclusions,
        "frames_used": int(len(frames)), "rdf_threshold": cfg.rdf_threshold, "bin_nm": cfg.bin_nm,
        "width_nm": cfg.width_nm, "fraction": cfg.fraction,
        "taper_nm": taper.tolist(), "mean_force_per_type_kj_mol_nm": dict(zip(dataset.type_names, s_type.tolist())),
        "fallback_pairs": fell_back,
        "closest_contact_nm": {k: v[0] for k, v in closest.items()},
        "wall_at_closest_contact_kj_mol": {k: v[1] for k, v in closest.items()},
    }
    kt = R_KJ_MOL_K * (dataset.temperature_K or 300.0)
    high = {k: v for k, v in closest.items() if v[1] > WALL_DATA_LIMIT_KT * kt}
    if high:
        worst = max(high, key=lambda k: high[k][1])
        warnings.warn(CGKDWarning(
            f"the fitted wall reaches {high[worst][1]:.3g} kJ/mol ({high[worst][1] / kt:.0f} kT) on the training frames' "
            f"closest {worst} pair ({high[worst][0]:.3f} nm) and above {WALL_DATA_LIMIT_KT:g} kT in {len(high)} pair(s): "
            "it pushes configurations the data hold; lower wall.rdf_threshold or check the pairs it acts on "
            "(priors.exclusions)"), stacklevel=2)
    return wall, report
