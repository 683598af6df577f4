"""The system registry: the molecular systems the package ships data for.

A system is a folder ``<systems>/<name>/`` (:func:`openmm_cgkd.resources.systems_dir`) holding a
``cg_system.yaml`` that says what the rest of the package needs to know about it, so that no
system-specific name, number or path is written into the core::

    name: des
    description: "reline (choline chloride : urea 1:2), one bead per molecule"
    bead_types:                 # list order = type index
      - {name: Cho, residue_name: CHO, mass_dalton: 104.173}
      - ...
    composition: {Cho: 1, Cl: 1, Urea: 2}   # bead-count ratio of the liquid
    molecules: 1000                         # the reference box: this many beads ...
    box_nm: 4.484                           # ... in a cube of this edge (nm)
    files:                                  # role -> file in the folder
      aa_system: system.yaml
      mapping: mapping.yaml
      cg_start: cg_start.pdb
      reference: reline_252_cg.h5

A system without ``molecules`` and ``box_nm`` is not periodic (a molecule in implicit solvent,
e.g. ``dipeptide``): it has no reference box, so what needs a bead density (a lattice of the
system, a neighbour budget from the density) is a :class:`~openmm_cgkd.errors.UsageError`
there. A bead type may name its ``atom_name`` in bead PDBs (default: its ``residue_name``).

:func:`get_system` reads it (through the package's config mechanism, :mod:`openmm_cgkd.config`)
into a :class:`CGSystem`; :data:`DEFAULT_SYSTEM` (``des``) is the system of the demo, of
untrained bundles and of the AA commands' defaults. Units: dalton, nm.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from openmm_cgkd.config import Config, ConfigError
from openmm_cgkd.errors import MissingFileError, UsageError
from openmm_cgkd.fileio import file_sha256
from openmm_cgkd.resources import systems_dir
from openmm_cgkd.topology import BeadType, composition_counts, cube_edge_nm, lattice_configuration

__all__ = ["CGSystem", "SystemSpec", "get_system", "system_names", "find_system_file", "DEFAULT_SYSTEM", "SPEC_FILE"]

DEFAULT_SYSTEM = "des"
SPEC_FILE = "cg_system.yaml"


@dataclass
class SystemSpec(Config):
    """The content of ``cg_system.yaml`` (see the module docstring)."""

    name: str
    bead_types: list[dict]
    molecules: int | None = None  # None with box_nm None: not periodic
    box_nm: float | None = None
    composition: dict = field(default_factory=dict)
    files: dict = field(default_factory=dict)
    description: str = ""

    def __post_init__(self) -> None:
        names = [b.get("name") for b in self.bead_types]
        if not names or len(set(names)) != len(names):
            raise ConfigError(f"system {self.name}: bead_types needs distinct names, got {names}")
        if set(self.composition) - set(names):
            raise ConfigError(f"system {self.name}: composition names {sorted(set(self.composition) - set(names))}, "
                              f"not bead types {names}")
        if (self.molecules is None) != (self.box_nm is None):
            raise ConfigError(f"system {self.name}: give both molecules and box_nm (a periodic reference box) "
                              "or neither (not periodic)")
        if self.molecules is not None and (self.molecules < 1 or not self.box_nm > 0):
            raise ConfigError(f"system {self.name}: molecules must be >= 1 and box_nm > 0")
        for b in self.bead_types:
            if not isinstance(b.get("mass_dalton"), (int, float)) or not b.get("residue_name"):
                raise ConfigError(f"system {self.name}: bead type {b.get('name')!r} needs residue_name and "
                                  "mass_dalton (dalton)")


@dataclass
class CGSystem:
    """A registered system: its folder and its :class:`SystemSpec`."""

    directory: Path
    spec: SystemSpec

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def type_names(self) -> list[str]:
        return [b["name"] for b in self.spec.bead_types]

    @property
    def periodic(self) -> bool:
        """Whether the system has a periodic reference box (``molecules`` and ``box_nm``)."""
        return self.spec.box_nm is not None

    @property
    def bead_density_per_nm3(self) -> float:
        """CG beads per nm^3 of the reference box; :class:`UsageError` for a system that is not
        periodic."""
        if not self.periodic:
            raise UsageError(f"system {self.name} is not periodic (no molecules/box_nm in its {SPEC_FILE}): it has "
                             "no bead density; give a structure file of it (bead PDB) instead")
        return self.spec.molecules / self.spec.box_nm ** 3

    def counts(self, n_beads: int) -> dict[str, int]:
        """``n_beads`` split by the system's ``composition`` (:func:`~openmm_cgkd.topology.composition_counts`)."""
        if not self.spec.composition:
            raise UsageError(f"system {self.name} gives no composition (cg_system.yaml): give a structure file")
        return composition_counts(self.spec.composition, n_beads)

    def box_edge_nm(self, n_beads: int) -> float:
        """Edge (nm) of the cube holding ``n_beads`` at the reference box's bead density."""
        return cube_edge_nm(n_beads, self.bead_density_per_nm3)

    def lattice(self, n_beads: int, seed: int = 0):
        """``(type names [N], positions [N,3] nm, box [3,3] nm)``: ``n_beads`` of the system's
        composition on a jittered cubic lattice at its reference density
        (:func:`~openmm_cgkd.topology.lattice_configuration`)."""
        return lattice_configuration(self.counts(n_beads), self.box_edge_nm(n_beads), seed=seed)

    def bead_types(self) -> list:
        """The bead types as :class:`~openmm_cgkd.topology.BeadType` s (atom name: ``atom_name``,
        default the residue name)."""
        return [BeadType(b["name"], b["residue_name"], [b.get("atom_name", b["residue_name"])], b["mass_dalton"])
                for b in self.spec.bead_types]

    def file(self, role: str, must_exist: bool = True) -> Path:
        """The system's file for ``role`` (a key of ``files``); :class:`MissingFileError` when
        ``must_exist`` and it is not there."""
        if role not in self.spec.files:
            raise UsageError(f"system {self.name} names no {role!r} file (it has {sorted(self.spec.files)})")
        path = self.directory / self.spec.files[role]
        if must_exist and not path.exists():
            raise MissingFileError(f"{path} ({role} of system {self.name}) is missing")
        return path


def system_names() -> list[str]:
    """Names of the registered systems (folders of :func:`~openmm_cgkd.resources.systems_dir`
    holding a ``cg_system.yaml``)."""
    root = systems_dir()
    return sorted(p.name for p in root.iterdir() if (p / SPEC_FILE).is_file()) if root.is_dir() else []


def get_system(name: str = DEFAULT_SYSTEM) -> CGSystem:
    """The registered system ``name``; :class:`~openmm_cgkd.errors.UsageError` listing the
    registered ones when there is none of that name."""
    folder = systems_dir() / name
    if not (folder / SPEC_FILE).is_file():
        raise UsageError(f"no system {name!r} in {systems_dir()} (registered: {system_names() or 'none'})")
    spec = SystemSpec.from_yaml(folder / SPEC_FILE)
    if spec.name != name:
        raise ConfigError(f"{folder / SPEC_FILE} names the system {spec.name!r}, not {name!r} (its folder)")
    return CGSystem(folder, spec)


def find_system_file(name: str, sha256: str | None = None) -> Path:
    """The file called ``name`` in the folder of a registered system (e.g. a force field that a
    moved run directory no longer finds beside it), with content ``sha256`` when given;
    :class:`MissingFileError` when no registered system holds it."""
    for system in system_names():
        path = systems_dir() / system / name
        if path.is_file() and (sha256 is None or file_sha256(path) == sha256):
            return path
    raise MissingFileError(f"{name}{' (sha256 ' + sha256[:12] + '...)' if sha256 else ''} is in no registered "
                           f"system ({system_names() or 'none'} in {systems_dir()})")
