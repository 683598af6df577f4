"""Structural validation of CG models (docs/METHOD.md section 4), mdtraj style: plain functions of a
trajectory returning small typed results (units nm, degrees, ps).

====================================  ====================================================================
``compute_rdfs(traj, edges)``         g(r) per bead-type pair (``mdtraj.compute_rdf``)
``compute_adfs(traj, cutoffs)``       angle densities of triplets j-i-k per cutoff
``compute_cdfs(traj, edges)``         single-linkage merge-distance densities per species
``tae`` / ``tae_table``               total absolute error between curves
``replica_mean``                      mean and std of curves over replicas
``assess_stability(traj)``            broken frames, time-resolved CDFs, clustering drift
``detect_equilibration(energies)``    start of the equilibrated part (pymbar, Chodera 2016)
``analyze_model(...)``                all of it for replicas of one model vs an AA reference
``noise_floor(reference, n)``         TAE of n-frame reference blocks vs the other half (sampling noise)
``write_report(report, out)``         report.json, summary.md and PNG plots
``check_reference(traj)``             has an AA reference rearranged, or is it one frozen packing?
``decide(questions)``                 verdicts of a family of comparisons (t-tests, Holm, TOST)
``replica_drift_series(traj, g)``     merge distances, coordination, energy from frame 0
``contact_coordination(m, ref)``      neighbours below the AA's closest contact per pair
``contact_gate(coordination)``        the shipping gate on them
``free_energy_surface(phi, psi)``     phi/psi free energy (kT) of a peptide; ``phi_psi``, ``basin_populations``,
                                      ``basin_transitions``, ``fes_score``, ``fes_noise_floor`` (ramachandran.py)
====================================  ====================================================================
"""
from openmm_cgkd.analysis.adf import adf_key, compute_adfs
from openmm_cgkd.analysis.cdf import (cdf_edges, cdf_from_merge_distances, compute_cdfs, frame_merge_distances,
                                      mst_merge_distances)
from openmm_cgkd.analysis.distributions import (AnalysisError, Distribution, bead_type_indices, make_trajectory,
                                                minimum_image)
from openmm_cgkd.analysis.equilibration import (EquilibrationResult, detect_equilibration, frames_to_discard,
                                                read_energy_log)
from openmm_cgkd.analysis.noise import NoiseFloor, noise_floor
from openmm_cgkd.analysis.rdf import compute_rdfs, rdf_edges
from openmm_cgkd.analysis.replicas import ReplicaStat, replica_mean, replica_stat, replica_tae_stats
from openmm_cgkd.analysis.report import (AnalysisSettings, ModelReport, ReplicaAnalysis, analyze_model,
                                         load_reference, load_trajectory, write_report)
from openmm_cgkd.analysis.stability import (CoordinateCheck, DriftResult, StabilityReport, assess_stability,
                                            cdf_drift, check_coordinates, time_resolved_cdfs)
from openmm_cgkd.analysis.tae import distribution_tae, tae, tae_table
from openmm_cgkd.analysis.contacts import ContactCoordination, ContactGate, contact_coordination, contact_gate
from openmm_cgkd.analysis.drift import DriftSeries, common_discard, model_drift, replica_drift_series
from openmm_cgkd.analysis.reference_check import ReferenceCheck, check_reference
from openmm_cgkd.analysis.ramachandran import (RamachandranSpec, basin_populations, basin_transitions,
                                               block_average, compute_dihedrals, fes_noise_floor, fes_score,
                                               free_energy_surface, phi_psi)
from openmm_cgkd.analysis.statistics import (Decision, StatisticsConfig, decide, detectable_difference, holm,
                                             paired_test, tost_ratio, welch_test)

__all__ = [
    "AnalysisError", "Distribution", "bead_type_indices", "make_trajectory", "minimum_image",
    "compute_rdfs", "rdf_edges", "compute_adfs", "adf_key",
    "compute_cdfs", "cdf_edges", "cdf_from_merge_distances", "frame_merge_distances", "mst_merge_distances",
    "tae", "distribution_tae", "tae_table",
    "ReplicaStat", "replica_stat", "replica_mean", "replica_tae_stats",
    "CoordinateCheck", "DriftResult", "StabilityReport", "assess_stability", "cdf_drift", "check_coordinates",
    "time_resolved_cdfs",
    "EquilibrationResult", "detect_equilibration", "frames_to_discard", "read_energy_log",
    "AnalysisSettings", "ModelReport", "ReplicaAnalysis", "analyze_model", "write_report", "load_reference",
    "load_trajectory", "NoiseFloor", "noise_floor",
    "ReferenceCheck", "check_reference", "ContactCoordination", "ContactGate", "contact_coordination", "contact_gate",
    "DriftSeries", "replica_drift_series", "model_drift", "common_discard",
    "RamachandranSpec", "compute_dihedrals", "phi_psi", "free_energy_surface", "block_average",
    "basin_populations", "basin_transitions", "fes_score", "fes_noise_floor",
    "Decision", "StatisticsConfig", "decide", "welch_test", "paired_test", "holm", "tost_ratio", "detectable_difference",
]
