"""Model bundles: a directory holding a TorchScript CG model and its YAML manifest.

Layout::

    my-model/
        manifest.yaml     what the model is (below)
        model.pt          TorchScript module, the network WITHOUT the wall
        state_dict.pt     the same network's weights as a plain ``state_dict`` (optional)

``model.pt`` has the :class:`~openmm_cgkd.model.potential.CGPotential` forward
``(bead_types [N] long, positions [N,3] nm, box [3,3] nm or None) -> (energy [] kJ/mol,
bead_energies [N] kJ/mol, forces [N,3] kJ/mol/nm)``; an ensemble bundle
(``model_kind: ensemble``) returns a fourth output ``force_std [N,3]`` (population std over
members). ``manifest.outputs`` names them. Both take float32 or float64 positions.

``state_dict.pt`` (written by :func:`save_bundle` since openmm_cgkd 0.1; listed in
``checksums``) holds the weights and buffers of the eager module, so that
:meth:`Bundle.eager_model` rebuilds the network from ``architecture`` (and ``model_kind``,
``num_members``) without TorchScript: the Python-side serving backend and a future without
TorchScript need nothing else. Older bundles lack it; for them the weights are read from the
TorchScript module (same parameter names). Readers that do not know the file ignore it.

``manifest.yaml`` (flat mapping; :class:`BundleManifest` has the same fields):

==================  ==============================================================================
format_version      int, the bundle layout version (:data:`FORMAT_VERSION`)
package_version     openmm_cgkd version that wrote it
created             ISO 8601 UTC time stamp
description         free text
model_kind          ``teacher`` | ``ensemble`` | ``student``
variant             free text, e.g. ``"ensemble; e,F_T,F_AA"`` (students), or null
num_members         int, networks in the module (1 unless ensemble)
module_file         file name of the TorchScript module (``model.pt``)
outputs             names of the module's outputs, in order
units               length nm, energy kJ/mol, force kJ/mol/nm, mass dalton (checked verbatim)
periodic            whether the model expects a periodic box
cutoff_nm           network cutoff (nm), equals ``architecture.cutoff_nm``
bead_types          list of {name, residue_name, atom_names, mass_dalton}; list index = type index
architecture        :class:`~openmm_cgkd.model.potential.PotentialConfig` as a mapping
wall                :meth:`WallParameters.to_dict` (types = bead type names, same order)
training            free mapping: provenance (data, seeds, losses, commit, ...); file paths in it
                    are relative to the bundle directory where it was written, with checksums
checksums           {file name: sha256 hex} of every weights file; from format 2 also ``manifest``:
                    the sha256 of the manifest's own content without that entry (canonical JSON of
                    the parsed YAML), so a hand-edited manifest fails to load; format-1 bundles
                    (written before) load without it
temperature_K       the training data's temperature (K): the default of MD with the model; optional
                    (absent in bundles written before it was recorded, or null: unknown, and MD
                    then needs an explicit temperature)
timestep_fs         the MD time step (fs) checked with the model (the study's ``timestep_check`` and MD
                    ran at it): the default of MD with the model; optional (absent or null: 2 fs)
==================  ==============================================================================

:func:`load_bundle` imports torchmd-net first (its custom ops must be registered before a
TorchScript model using them loads) and validates everything above, raising
:class:`BundleError` (a ``ValueError``; :class:`BundleNotFoundError` is also a
``FileNotFoundError``) with a message that names the problem.

The package holds one job per module: :mod:`~openmm_cgkd.bundle.manifest` (the manifest schema),
:mod:`~openmm_cgkd.bundle.io` (reading and writing bundle directories),
:mod:`~openmm_cgkd.bundle.versions` (which formats and package versions are read),
:mod:`~openmm_cgkd.bundle.demo` (untrained demo bundles), :mod:`~openmm_cgkd.bundle.registry`
(the shipped bundles); the bead types are :class:`openmm_cgkd.topology.BeadType`, the errors
:class:`openmm_cgkd.errors.BundleError`. Every public name is importable from ``openmm_cgkd.bundle``.
"""
from __future__ import annotations

from openmm_cgkd.bundle.demo import build_untrained_bundle, placeholder_wall, untrained_config
from openmm_cgkd.bundle.io import Bundle, build_eager_model, load_bundle, read_manifest, save_bundle
from openmm_cgkd.bundle.manifest import (EAGER_FILE, ENSEMBLE_OUTPUTS, MANIFEST_NAME, MODEL_KINDS, MODULE_FILE, OUTPUTS,
                                         UNITS, BundleManifest)
from openmm_cgkd.bundle.registry import models_dir, resolve_bundle_path, shipped_bundles
from openmm_cgkd.bundle.versions import FORMAT_VERSION, SUPPORTED_FORMAT_VERSIONS
from openmm_cgkd.errors import BundleError, BundleNotFoundError
from openmm_cgkd.topology import BeadType, bead_types_from_masses

__all__ = ["FORMAT_VERSION", "SUPPORTED_FORMAT_VERSIONS", "MANIFEST_NAME", "MODULE_FILE", "EAGER_FILE", "UNITS",
           "MODEL_KINDS", "OUTPUTS", "ENSEMBLE_OUTPUTS", "BundleError", "BundleNotFoundError", "BeadType",
           "bead_types_from_masses", "BundleManifest", "Bundle", "build_eager_model", "save_bundle", "load_bundle",
           "read_manifest", "build_untrained_bundle", "untrained_config", "placeholder_wall", "models_dir",
           "shipped_bundles", "resolve_bundle_path"]
