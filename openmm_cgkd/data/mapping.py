"""AA -> CG mapping: a YAML spec of beads, centre-of-mass positions and summed forces.

Mapping spec (YAML)::

    type_names: [Cho, Cl, Urea]          # bead types, in index order
    residues:                            # AA residue name -> its beads, in order
      CHOL:
        - {type: Cho, atoms: all}        # "all", or a list of atom names / 1-based indices
      Cl:
        - {type: Cl, atoms: all}
      UREA:
        - {type: Urea, atoms: all}
    aliases: {CHO: CHOL, URE: UREA, CL: Cl}   # optional: other residue names (e.g. from PDB)

Beads are made residue by residue in topology order. Every atom must belong to exactly one bead
(else its force would be lost). Per frame:

* the molecule (residue) is made whole across the periodic boundaries: each atom is taken at
  the minimum image of its offset from the residue's first atom (valid for molecules shorter
  than half the box), then
* bead position = centre of mass of its atoms, wrapped into the primary box,
* bead force = sum of its atoms' forces, bead mass = sum of its atoms' masses.

Forces must be the total force on each atom. With constrained bonds, the constraint forces
(which OpenMM's and GROMACS' force outputs omit) cancel inside a bead only when the whole
constrained group lies in that bead; with one bead per molecule and H-bond constraints this
holds exactly.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from openmm_cgkd.data.dataset import CGDataset
from openmm_cgkd.errors import CGKDError
from openmm_cgkd.fileio import file_sha256

__all__ = ["MappingSpec", "MappingError", "CGMap", "map_trajectory", "make_whole", "wrap_positions"]


class MappingError(CGKDError, ValueError):
    """A mapping spec does not fit the topology, or the input data are inconsistent."""

    exit_code = 2  # bad input: usage error


@dataclass
class BeadDef:
    type: str
    atoms: str | list  # "all" or names / 1-based indices


@dataclass
class MappingSpec:
    type_names: list[str]
    residues: dict[str, list[BeadDef]]
    aliases: dict[str, str] = field(default_factory=dict)
    source: str = ""

    @classmethod
    def from_dict(cls, d: dict, source: str = "") -> "MappingSpec":
        if not isinstance(d, dict) or "type_names" not in d or "residues" not in d:
            raise MappingError(f"mapping spec {source} needs 'type_names' and 'residues'")
        if not isinstance(d["type_names"], list) or not isinstance(d["residues"], dict):
            raise MappingError(f"mapping spec {source}: 'type_names' must be a list and 'residues' a mapping "
                               "(residue name -> beads)")
        types = [str(t) for t in d["type_names"]]
        res: dict[str, list[BeadDef]] = {}
        for rname, beads in d["residues"].items():
            if isinstance(beads, dict):
                beads = [beads]
            lst = []
            for b in beads if isinstance(beads, list) else [None]:
                if not isinstance(b, dict) or not (b.get("atoms", "all") == "all" or isinstance(b.get("atoms"), list)):
                    raise MappingError(f"mapping spec {source}: residue {rname}: each bead must be "
                                       "{type: NAME, atoms: all | [names or 1-based indices]}, got " + repr(b))
                if b.get("type") not in types:
                    raise MappingError(f"bead type {b.get('type')!r} of residue {rname} is not in type_names {types}")
                lst.append(BeadDef(str(b["type"]), b.get("atoms", "all")))
            res[str(rname)] = lst
        return cls(types, res, {str(k): str(v) for k, v in (d.get("aliases") or {}).items()}, source)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "MappingSpec":
        """Read a mapping spec file (a missing file is a ``MissingFileError``, bad YAML a :class:`MappingError`)."""
        from openmm_cgkd.config import read_yaml_mapping

        return cls.from_dict(read_yaml_mapping(path, "mapping spec", MappingError), str(path))

    def beads_for(self, residue_name: str) -> list[BeadDef]:
        name = residue_name if residue_name in self.residues else self.aliases.get(residue_name)
        if name is None or name not in self.residues:
            raise MappingError(f"residue {residue_name!r} is not in the mapping spec {self.source or ''} "
                               f"(residues: {sorted(self.residues)}, aliases: {self.aliases})")
        return self.residues[name]


@dataclass
class CGMap:
    """The mapping compiled for one topology: bead membership, masses and types."""

    atom_bead: np.ndarray  # (n_atoms,) bead index of each atom
    atom_ref: np.ndarray  # (n_atoms,) reference atom (first atom of its residue) for making whole
    atom_masses: np.ndarray  # (n_atoms,)
    bead_types: np.ndarray  # (n_beads,)
    bead_masses: np.ndarray  # (n_beads,)
    type_names: list[str]

    @property
    def n_beads(self) -> int:
        return len(self.bead_types)

    @property
    def n_atoms(self) -> int:
        return len(self.atom_bead)

    @classmethod
    def build(cls, spec: MappingSpec, residues, masses: np.ndarray) -> "CGMap":
        """``residues``: sequence of (residue name, [(atom index, atom name), ...]) in topology order."""
        masses = np.asarray(masses, dtype=float)
        n_atoms = len(masses)
        atom_bead = np.full(n_atoms, -1, dtype=np.int64)
        atom_ref = np.zeros(n_atoms, dtype=np.int64)
        types = []
        for rname, atoms in residues:
            idx = [a for a, _ in atoms]
            names = [n for _, n in atoms]
            for a in idx:
                atom_ref[a] = idx[0]
            for bead in spec.beads_for(rname):
                if bead.atoms == "all":
                    members = idx
                else:
                    members = []
                    for sel in bead.atoms:
                        if isinstance(sel, int):
                            if not 1 <= sel <= len(idx):
                                raise MappingError(f"atom index {sel} out of range for residue {rname} ({len(idx)} atoms)")
                            members.append(idx[sel - 1])
                        else:
                            hits = [a for a, n in zip(idx, names) if n == sel]
                            if not hits:
                                raise MappingError(f"atom name {sel!r} not found in residue {rname} (atoms: {names})")
                            members.extend(hits)
                b = len(types)
                for a in members:
                    if atom_bead[a] != -1:
                        raise MappingError(f"atom {a} of residue {rname} is in two beads")
                    atom_bead[a] = b
                types.append(spec.type_names.index(bead.type))
        if np.any(atom_bead < 0):
            lost = np.flatnonzero(atom_bead < 0)
            raise MappingError(f"{len(lost)} atoms (first: {lost[:5].tolist()}) belong to no bead; every atom "
                               "must be mapped so that no force is lost")
        if np.any(masses <= 0):
            raise MappingError("atom masses must be positive (dalton)")
        bead_masses = np.bincount(atom_bead, weights=masses, minlength=len(types))
        return cls(atom_bead, atom_ref, masses, np.asarray(types, np.int32), bead_masses, list(spec.type_names))

    @classmethod
    def from_topology(cls, spec: MappingSpec, topology, masses: np.ndarray) -> "CGMap":
        """From an OpenMM or mdtraj topology."""
        residues = []
        res_iter = topology.residues() if callable(topology.residues) else topology.residues
        for res in res_iter:
            atoms = res.atoms() if callable(res.atoms) else res.atoms
            residues.append((res.name, [(a.index, a.name) for a in atoms]))
        n = sum(len(a) for _, a in residues)
        if n != len(masses):
            raise MappingError(f"topology has {n} atoms but {len(masses)} masses were given")
        return cls.build(spec, residues, masses)

    # ------------------------------------------------------------------ per-frame maps
    def map_frames(self, positions: np.ndarray, forces: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(F, n_atoms, 3) nm / kJ/mol/nm + (F, 3, 3) nm -> bead positions and forces (F, n_beads, 3)."""
        positions = np.asarray(positions, dtype=np.float64)
        forces = np.asarray(forces, dtype=np.float64)
        boxes = np.asarray(boxes, dtype=np.float64)
        if positions.shape[1:] != (self.n_atoms, 3) or forces.shape != positions.shape:
            raise MappingError(f"positions {positions.shape} / forces {forces.shape} do not match the "
                               f"mapping's {self.n_atoms} atoms")
        nb = self.n_beads
        w = self.atom_masses / self.bead_masses[self.atom_bead]
        cg_pos = np.empty((positions.shape[0], nb, 3))
        cg_f = np.empty((positions.shape[0], nb, 3))
        for f in range(positions.shape[0]):
            x = make_whole(positions[f], self.atom_ref, boxes[f])
            com = np.zeros((nb, 3))
            for d in range(3):
                com[:, d] = np.bincount(self.atom_bead, weights=w * x[:, d], minlength=nb)
                cg_f[f, :, d] = np.bincount(self.atom_bead, weights=forces[f, :, d], minlength=nb)
            cg_pos[f] = wrap_positions(com, boxes[f])
        return cg_pos, cg_f


def make_whole(x: np.ndarray, ref: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Atoms moved to the minimum image of their offset from ``x[ref]`` (rows of ``box`` = vectors)."""
    d = x - x[ref]
    inv = np.linalg.inv(box)
    s = d @ inv
    s -= np.round(s)
    return x[ref] + s @ box


def wrap_positions(x: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Positions wrapped into the primary cell (fractional coordinates in [0, 1))."""
    s = x @ np.linalg.inv(box)
    s -= np.floor(s)
    return s @ box


def map_trajectory(aa, spec: MappingSpec, *, stride: int = 1, max_frames: int | None = None,
                   provenance: dict | None = None) -> CGDataset:
    """Map an :class:`~openmm_cgkd.data.external.AATrajectory` to a :class:`CGDataset` (float32)."""
    cgmap = CGMap.from_topology(spec, aa.topology, aa.masses)
    sel = slice(None, None, stride)
    pos, frc, box, times = aa.positions[sel], aa.forces[sel], aa.boxes[sel], aa.times[sel]
    pe = None if aa.potential_energy is None else aa.potential_energy[sel]
    if max_frames is not None:
        pos, frc, box, times = pos[:max_frames], frc[:max_frames], box[:max_frames], times[:max_frames]
        pe = None if pe is None else pe[:max_frames]
    cg_pos, cg_f = cgmap.map_frames(pos, frc, box)
    prov = dict(aa.provenance)
    prov.update({
        # the mapping file by absolute path here: CGDataset.save writes it relative to the dataset
        "mapping": str(Path(spec.source).resolve()) if spec.source and Path(spec.source).is_file()
        else (spec.source or "in-memory spec"),
        "mapping_sha256": file_sha256(spec.source) if spec.source and Path(spec.source).is_file() else None,
        "mapping_rule": "bead position = COM of its atoms (molecule made whole, wrapped into the box); "
                        "bead force = sum of atomic forces; bead mass = sum of atomic masses",
        "n_atoms": int(cgmap.n_atoms), "n_beads": int(cgmap.n_beads), "stride": int(stride),
        "mapped": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    })
    prov.update(provenance or {})
    return CGDataset(positions=cg_pos, forces=cg_f, boxes=box, times=times, bead_types=cgmap.bead_types,
                     type_names=cgmap.type_names, masses=cgmap.bead_masses, potential_energy=pe, provenance=prov)
