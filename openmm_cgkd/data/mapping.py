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
    bead_names:                          # optional: names of the beads in bead PDBs / topologies
      Cho: CHO                           # residue = atom name, or
      Urea: {residue: URE, atom: U}      # both given (residue <= 3, atom <= 4 characters)

Water goes by many residue names: GROMACS writes ``SOL`` (atoms ``OW HW1 HW2``), while OpenMM's
and mdtraj's PDB readers rename water to ``HOH`` (atoms ``O H1 H2``). A spec naming any of
:data:`WATER_RESIDUE_NAMES` matches water under any other of them, and its atom names ``OW``/
``O``/``OH2``, ``HW1``/``H1``, ``HW2``/``H2`` match each other.

Bead names default to the type's first three letters, upper-cased
(:func:`openmm_cgkd.topology.default_residue_name`). They are checked when the spec is read: two
types with one (residue, atom) name, a residue name longer than 3 or an atom name longer than 4
characters (PDB columns), or a residue name OpenMM's PDB reader renames (``WAT``, ``SOL``, ...:
a bead PDB would come back with another name) is a :class:`MappingError`.

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
from openmm_cgkd.provenance import sha256_file
from openmm_cgkd.topology import default_residue_name

__all__ = ["MappingSpec", "MappingError", "CGMap", "map_trajectory", "make_whole", "wrap_positions",
           "resolve_bead_names", "WATER_RESIDUE_NAMES"]

# residue names of water (OpenMM's pdbNames.xml: HOH and the names its PDB reader renames to HOH)
WATER_RESIDUE_NAMES = ("HOH", "H2O", "WAT", "SOL", "TIP3", "TP3", "TIP", "T4P", "SPC")
_WATER_ATOM_ALIASES = ({"O", "OW", "OH2"}, {"H1", "HW1"}, {"H2", "HW2"})
_PDB_RESIDUE_CHARS, _PDB_ATOM_CHARS = 3, 4
SPEC_KEYS = ("type_names", "residues", "aliases", "bead_names")  # the keys a mapping spec may have


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
    bead_names: dict[str, tuple[str, str]] = field(default_factory=dict)  # type -> (residue, atom) name

    def __post_init__(self) -> None:
        self.bead_names = resolve_bead_names(self.type_names, self.bead_names, self.source)

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
        unknown = sorted(set(d) - set(SPEC_KEYS))
        if unknown:
            raise MappingError(f"mapping spec {source}: unknown keys {unknown} (known: {', '.join(SPEC_KEYS)})")
        names = d.get("bead_names") or {}
        if not isinstance(names, dict):
            raise MappingError(f"mapping spec {source}: 'bead_names' must map bead types to a name or "
                               "{residue: NAME, atom: NAME}")
        given = {}
        for t, v in names.items():
            if isinstance(v, str):
                given[str(t)] = (v, v)
            elif isinstance(v, dict) and set(v) <= {"residue", "atom"} and "residue" in v:
                given[str(t)] = (str(v["residue"]), str(v.get("atom", v["residue"])))
            else:
                raise MappingError(f"mapping spec {source}: bead_names[{t!r}] must be a name or "
                                   f"{{residue: NAME, atom: NAME}}, got {v!r}")
        return cls(types, res, {str(k): str(v) for k, v in (d.get("aliases") or {}).items()}, source, given)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "MappingSpec":
        """Read a mapping spec file (a missing file is a ``MissingFileError``, bad YAML a :class:`MappingError`)."""
        from openmm_cgkd.config import read_yaml_mapping

        return cls.from_dict(read_yaml_mapping(path, "mapping spec", MappingError), str(path))

    def beads_for(self, residue_name: str) -> list[BeadDef]:
        name = residue_name if residue_name in self.residues else self.aliases.get(residue_name)
        if (name is None or name not in self.residues) and residue_name in WATER_RESIDUE_NAMES:
            name = next((r for r in self.residues if r in WATER_RESIDUE_NAMES), None)
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
                            if not hits and rname in WATER_RESIDUE_NAMES:
                                same = next((g for g in _WATER_ATOM_ALIASES if sel in g), {sel})
                                hits = [a for a, n in zip(idx, names) if n in same]
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


def resolve_bead_names(type_names, given=None, source: str = "") -> dict[str, tuple[str, str]]:
    """(residue name, atom name) of every bead type: ``given`` ones, else the default code; a
    :class:`MappingError` for unknown types, collisions, names longer than PDB allows, or residue
    names OpenMM's PDB reader renames (see the module docstring)."""
    given = dict(given or {})
    where = f"mapping spec {source}: " if source else ""
    unknown = sorted(set(given) - set(type_names))
    if unknown:
        raise MappingError(f"{where}bead_names names {unknown}, not bead types {list(type_names)}")
    out, seen = {}, {}
    for t in type_names:
        res, atom = given.get(t) or (default_residue_name(t),) * 2
        how = "set in bead_names" if t in given else "the default: the first 3 letters of the type name"
        if not res or len(res) > _PDB_RESIDUE_CHARS or not atom or len(atom) > _PDB_ATOM_CHARS:
            raise MappingError(f"{where}bead type {t!r}: residue name {res!r} / atom name {atom!r} ({how}) do not fit "
                               f"a PDB file (residue 1-{_PDB_RESIDUE_CHARS}, atom 1-{_PDB_ATOM_CHARS} characters): "
                               "set them in bead_names")
        if res in WATER_RESIDUE_NAMES[1:]:
            raise MappingError(f"{where}bead type {t!r}: residue name {res!r} ({how}) is read back as HOH by OpenMM's "
                               "PDB reader: name the bead HOH or another name in bead_names")
        if (res, atom) in seen:
            raise MappingError(f"{where}bead types {seen[(res, atom)]!r} and {t!r} would both be residue {res!r}, atom "
                               f"{atom!r} ({how}) in bead PDBs and topologies: give them distinct names in bead_names, "
                               f"e.g. bead_names: {{{seen[(res, atom)]}: B1, {t}: B2}}")
        seen[(res, atom)] = t
        out[t] = (res, atom)
    return out


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
                   provenance: dict | None = None, temperature_K: float | None = None) -> CGDataset:
    """Map an :class:`~openmm_cgkd.data.external.AATrajectory` to a :class:`CGDataset` (float32).

    The dataset's temperature is ``temperature_K`` (K), else the trajectory's own
    (``aa.temperature_K``: an aa-run protocol or a GROMACS .mdp), else unknown (None); a
    ``temperature_K`` that contradicts the trajectory's is a :class:`MappingError`."""
    own = getattr(aa, "temperature_K", None)
    if temperature_K is not None and own is not None and abs(float(temperature_K) - float(own)) > 1e-6:
        raise MappingError(f"--temperature {temperature_K:g} K contradicts the data's own {own:g} K "
                           f"({aa.provenance.get('temperature_source', 'its provenance')}): leave --temperature out")
    temperature_K = own if temperature_K is None else temperature_K
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
        "mapping_sha256": sha256_file(spec.source) if spec.source and Path(spec.source).is_file() else None,
        "mapping_rule": "bead position = COM of its atoms (molecule made whole, wrapped into the box); "
                        "bead force = sum of atomic forces; bead mass = sum of atomic masses",
        "n_atoms": int(cgmap.n_atoms), "n_beads": int(cgmap.n_beads), "stride": int(stride),
        "mapped": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    })
    prov.update(provenance or {})
    return CGDataset(positions=cg_pos, forces=cg_f, boxes=box, times=times, bead_types=cgmap.bead_types,
                     type_names=cgmap.type_names, masses=cgmap.bead_masses, potential_energy=pe, provenance=prov,
                     temperature_K=temperature_K, bead_names=dict(spec.bead_names))
