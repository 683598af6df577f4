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
    allow_unmapped: false                # optional: true lets atoms belong to no bead (a partial map)
    constraints: h-bonds                 # optional: the AA run's constraints: h-bonds | all-bonds | none
    bead_names:                          # optional: names of the beads in bead PDBs / topologies
      Cho: CHO                           # residue = atom name, or
      Urea: {residue: URE, atom: U}      # both given (residue <= 3, atom <= 4 characters)
    masses:                              # optional: atom masses (dalton) by residue and atom name,
      UREA: {C: 12.011, O: 15.999, N1: 14.007, N2: 14.007, H11: 1.008, H12: 1.008, H21: 1.008, H22: 1.008}

Atom masses come from the data (an OpenMM System, a GROMACS .top, a ForceReporter file, or
``--masses``), never from elements. ``masses:`` in the spec gives them for data that carry none
(a .pdb or .gro with a trajectory); where the data carry masses too, the two must agree (to
1e-3 Da), else :class:`MappingError` names the first atom that differs.

Water goes by many residue names: GROMACS writes ``SOL`` (atoms ``OW HW1 HW2``), while OpenMM's
and mdtraj's PDB readers rename water to ``HOH`` (atoms ``O H1 H2``). A spec naming any of
:data:`WATER_RESIDUE_NAMES` matches water under any other of them, and its atom names ``OW``/
``O``/``OH2``, ``HW1``/``H1``, ``HW2``/``H2`` match each other.

Bead names default to the type's first three letters, upper-cased
(:func:`openmm_cgkd.topology.default_residue_name`). They are checked when the spec is read: two
types with one (residue, atom) name, a residue name longer than 3 or an atom name longer than 4
characters (PDB columns), or a residue name OpenMM's PDB reader renames (``WAT``, ``SOL``, ...:
a bead PDB would come back with another name) is a :class:`MappingError`.

**Force aggregation.** ``{type: C, atoms: [C], force_atoms: [O]}`` adds the forces of atoms
left out of every bead (``allow_unmapped``) to the bead's force without moving its position: the
mapped force is still a valid estimate of the mean force (the force map's weights on the bead's
own atoms are unchanged, and an unmapped atom does not move any bead), while a stiff bond to a
left-out atom (C=O, a cap's methyl) no longer puts its large, fast force into the bead's as
noise. A force atom must be of the bead's residue, unmapped, and in no other bead's
``force_atoms``; a constrained group (a heavy atom with its hydrogens) must go to one bead whole.

Beads are made residue by residue in topology order. A bead entry ``{type: T, atoms: [...],
join: previous}`` adds its atoms to the last bead made before it (a bead spanning two residues,
e.g. a cap with its neighbour); a residue mapped to ``[]`` has no bead (with ``allow_unmapped``).

Every atom must belong to exactly one bead unless ``allow_unmapped`` is true. Leaving atoms out
is valid (the mapped force is still the mean force of the CG coordinates) unless a constraint
joins an unmapped atom to a mapped one, or atoms of two different beads: the constraint force,
which OpenMM's and GROMACS' force outputs omit, would then not cancel inside one bead. Which
atom pairs are constrained is declared by ``constraints`` (default ``h-bonds``: every bond to a
hydrogen, plus rigid waters); a map that violates it is a :class:`MappingError` naming the pair.

Bonds between beads (:class:`~openmm_cgkd.cgtopology.CGTopology`) come from the AA bonds:
two beads are bonded when an AA bond joins their atoms, directly or through unmapped atoms.
Per frame:

* with a periodic box, each molecule is made whole: every atom is taken at the minimum image of
  its offset from its parent along the AA bonds (a breadth-first tree of the molecule; atoms
  without bonds use their residue's first atom), then
* bead position = centre of mass of its atoms (wrapped into the primary box when periodic),
* bead force = sum of its atoms' forces (plus its ``force_atoms``'), bead mass = sum of its
  atoms' masses.

A trajectory without a box (a solute in vacuum or implicit solvent) maps to a non-periodic
dataset (all-zero boxes).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from openmm_cgkd.cgtopology import CGTopology
from openmm_cgkd.data.dataset import CGDataset
from openmm_cgkd.errors import CGKDError
from openmm_cgkd.fileio import file_sha256
from openmm_cgkd.topology import default_residue_name

__all__ = ["MappingSpec", "MappingError", "CGMap", "map_trajectory", "make_whole", "wrap_positions",
           "resolve_bead_names", "WATER_RESIDUE_NAMES"]

# residue names of water (OpenMM's pdbNames.xml: HOH and the names its PDB reader renames to HOH)
WATER_RESIDUE_NAMES = ("HOH", "H2O", "WAT", "SOL", "TIP3", "TP3", "TIP", "T4P", "SPC")
_WATER_ATOM_ALIASES = ({"O", "OW", "OH2"}, {"H1", "HW1"}, {"H2", "HW2"})
_PDB_RESIDUE_CHARS, _PDB_ATOM_CHARS = 3, 4
SPEC_KEYS = ("type_names", "residues", "aliases", "bead_names", "allow_unmapped", "constraints", "masses")  # the keys a mapping spec may have


class MappingError(CGKDError, ValueError):
    """A mapping spec does not fit the topology, or the input data are inconsistent."""

    exit_code = 2  # bad input: usage error


CONSTRAINT_MODES = ("h-bonds", "all-bonds", "none")
WATER_RESIDUES = ("HOH", "SOL", "WAT", "TIP3", "TIP4", "SPC")


@dataclass
class BeadDef:
    type: str
    atoms: str | list  # "all" or names / 1-based indices
    join: str | None = None  # "previous": the atoms join the bead made before this one
    force_atoms: list = field(default_factory=list)  # unmapped atoms (names / indices) whose forces add to it


@dataclass
class MappingSpec:
    type_names: list[str]
    residues: dict[str, list[BeadDef]]
    aliases: dict[str, str] = field(default_factory=dict)
    source: str = ""
    allow_unmapped: bool = False
    constraints: str = "h-bonds"
    bead_names: dict[str, tuple[str, str]] = field(default_factory=dict)  # type -> (residue, atom) name
    masses: dict[str, dict[str, float]] = field(default_factory=dict)  # residue -> atom name -> dalton

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
                if b.get("join") not in (None, "previous"):
                    raise MappingError(f"mapping spec {source}: residue {rname}: join must be 'previous', "
                                       f"got {b.get('join')!r}")
                extra = sorted(set(b) - {"type", "atoms", "join", "force_atoms"})
                if extra:
                    raise MappingError(f"mapping spec {source}: residue {rname}: unknown bead key(s) {extra} "
                                       "(type, atoms, join, force_atoms)")
                fa = b.get("force_atoms", [])
                if not isinstance(fa, list):
                    raise MappingError(f"mapping spec {source}: residue {rname}: force_atoms must be a list of atom "
                                       f"names or 1-based indices, got {fa!r}")
                lst.append(BeadDef(str(b["type"]), b.get("atoms", "all"), b.get("join"), list(fa)))
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
        allow = d.get("allow_unmapped", False)
        if not isinstance(allow, bool):
            raise MappingError(f"mapping spec {source}: allow_unmapped must be true or false, got {allow!r}")
        constraints = d.get("constraints", "h-bonds")
        if constraints not in CONSTRAINT_MODES:
            raise MappingError(f"mapping spec {source}: constraints must be one of {list(CONSTRAINT_MODES)} "
                               f"(the AA run's constraints), got {constraints!r}")
        masses = d.get("masses") or {}
        table: dict[str, dict[str, float]] = {}
        if not isinstance(masses, dict):
            raise MappingError(f"mapping spec {source}: 'masses' must map residue names to {{atom name: dalton}}")
        for rname, atoms in masses.items():
            if str(rname) not in res:
                raise MappingError(f"mapping spec {source}: masses: residue {rname!r} is not one of residues "
                                   f"{sorted(res)}")
            if not isinstance(atoms, dict) or not atoms:
                raise MappingError(f"mapping spec {source}: masses[{rname!r}] must map atom names to masses (dalton)")
            for name, m in atoms.items():
                if isinstance(m, bool) or not isinstance(m, (int, float)) or not np.isfinite(m) or m <= 0:
                    raise MappingError(f"mapping spec {source}: masses[{rname!r}][{name!r}] must be a positive "
                                       f"number (dalton), got {m!r}")
            table[str(rname)] = {str(k): float(v) for k, v in atoms.items()}
        return cls(types, res, {str(k): str(v) for k, v in (d.get("aliases") or {}).items()}, source,
                   allow, constraints, given, table)

    def to_dict(self) -> dict:
        """The spec as :meth:`from_dict` reads it back (every setting, e.g. for a run's ``run.json``)."""
        return {"type_names": list(self.type_names), "aliases": dict(self.aliases),
                "residues": {k: [{"type": b.type, "atoms": b.atoms, **({"join": b.join} if b.join else {}),
                                  **({"force_atoms": list(b.force_atoms)} if b.force_atoms else {})}
                                 for b in v] for k, v in self.residues.items()},
                "bead_names": {t: {"residue": r, "atom": a} for t, (r, a) in self.bead_names.items()},
                "allow_unmapped": self.allow_unmapped, "constraints": self.constraints,
                **({"masses": {r: dict(a) for r, a in self.masses.items()}} if self.masses else {})}

    @classmethod
    def from_yaml(cls, path: str | Path) -> "MappingSpec":
        """Read a mapping spec file (a missing file is a ``MissingFileError``, bad YAML a :class:`MappingError`)."""
        from openmm_cgkd.config import read_yaml_mapping

        return cls.from_dict(read_yaml_mapping(path, "mapping spec", MappingError), str(path))

    def _spec_residue(self, residue_name: str) -> str:
        """The spec's name of a topology residue (itself, an alias, or water under any name)."""
        name = residue_name if residue_name in self.residues else self.aliases.get(residue_name)
        if (name is None or name not in self.residues) and residue_name in WATER_RESIDUE_NAMES:
            name = next((r for r in self.residues if r in WATER_RESIDUE_NAMES), None)
        if name is None or name not in self.residues:
            raise MappingError(f"residue {residue_name!r} is not in the mapping spec {self.source or ''} "
                               f"(residues: {sorted(self.residues)}, aliases: {self.aliases})")
        return name

    def beads_for(self, residue_name: str) -> list[BeadDef]:
        return self.residues[self._spec_residue(residue_name)]

    def atom_masses(self, residues, n_atoms: int) -> np.ndarray:
        """Per-atom masses (dalton, shape (n_atoms,)) from the spec's ``masses`` table; ``residues``
        as :meth:`CGMap.build` takes them. :class:`MappingError` naming the first atom it lacks."""
        out = np.zeros(n_atoms)
        for rname, atoms in residues:
            table = self.masses.get(self._spec_residue(rname), {})
            water = rname in WATER_RESIDUE_NAMES
            for a, n in atoms:
                m = table.get(n)
                if m is None and water:
                    m = next((table[k] for g in _WATER_ATOM_ALIASES if n in g for k in g if k in table), None)
                if m is None:
                    raise MappingError(f"mapping spec {self.source or ''}: masses: no mass for atom {n!r} of residue "
                                       f"{rname!r} (atom {a}); the table gives {sorted(table) or 'none for it'}")
                out[a] = m
        return out

    def masses_of(self, topology) -> np.ndarray:
        """:meth:`atom_masses` of an mdtraj or OpenMM topology (dalton, shape (n_atoms,))."""
        def items(x):  # OpenMM's are methods, mdtraj's properties
            return x() if callable(x) else x

        residues = [(r.name, [(a.index, a.name) for a in items(r.atoms)]) for r in items(topology.residues)]
        return self.atom_masses(residues, sum(len(atoms) for _, atoms in residues))


@dataclass
class CGMap:
    """The mapping compiled for one topology: bead membership, masses, types and bonds."""

    atom_bead: np.ndarray  # (n_atoms,) bead index of each atom, -1 for an unmapped atom
    atom_ref: np.ndarray  # (n_atoms,) parent atom for making molecules whole (itself for a root)
    atom_masses: np.ndarray  # (n_atoms,)
    bead_types: np.ndarray  # (n_beads,)
    bead_masses: np.ndarray  # (n_beads,)
    type_names: list[str]
    topology: CGTopology | None = None  # bonds between beads (None: built without AA bonds)
    atom_force_bead: np.ndarray | None = None  # (n_atoms,) bead each atom's force adds to (default atom_bead)

    def __post_init__(self) -> None:
        if self.atom_force_bead is None:
            self.atom_force_bead = np.asarray(self.atom_bead).copy()
        if self.topology is None:
            self.topology = CGTopology.unbonded(len(self.bead_types))
        # breadth-first levels of the making-whole tree: level k atoms hang from level k-1 atoms
        level = np.zeros(len(self.atom_ref), np.int64)
        ref = np.asarray(self.atom_ref)
        for _ in range(len(ref)):
            new = np.where(ref == np.arange(len(ref)), 0, level[ref] + 1)
            if np.array_equal(new, level):
                break
            level = new
        self._levels = [np.flatnonzero(level == k) for k in range(1, int(level.max()) + 1)] if len(level) else []

    @property
    def n_beads(self) -> int:
        return len(self.bead_types)

    @property
    def n_atoms(self) -> int:
        return len(self.atom_bead)

    @classmethod
    def build(cls, spec: MappingSpec, residues, masses: np.ndarray, bonds=None,
              hydrogens: np.ndarray | None = None) -> "CGMap":
        """``residues``: sequence of (residue name, [(atom index, atom name), ...]) in topology order;
        ``bonds``: AA bonds as atom index pairs (None: unknown, no bead bonds are made);
        ``hydrogens``: which atoms are hydrogens (for the ``h-bonds`` constraint check; default:
        atom names starting with H)."""
        masses = np.asarray(masses, dtype=float)
        n_atoms = len(masses)
        atom_bead = np.full(n_atoms, -1, dtype=np.int64)
        atom_ref = np.arange(n_atoms, dtype=np.int64)
        atom_res = np.zeros(n_atoms, dtype=np.int64)
        atom_names = [""] * n_atoms
        force_extra: dict[int, int] = {}  # unmapped atom -> the bead its force adds to (force_atoms)
        res_names = []
        multi_bead = []
        types: list[int] = []
        for r, (rname, atoms) in enumerate(residues):
            idx = [a for a, _ in atoms]
            names = [n for _, n in atoms]
            res_names.append(rname)
            for a, n in zip(idx, names):
                atom_ref[a] = idx[0]
                atom_res[a] = r
                atom_names[a] = str(n)
            first_bead = len(types)
            for bead in spec.beads_for(rname):
                members = idx if bead.atoms == "all" else _select_atoms(bead.atoms, rname, idx, names)
                if bead.join == "previous":
                    if not types:
                        raise MappingError(f"residue {rname}: join: previous needs a bead before it")
                    b = len(types) - 1
                    if spec.type_names[types[b]] != bead.type:
                        raise MappingError(f"residue {rname}: a bead joined to the previous one must have its type "
                                           f"{spec.type_names[types[b]]!r}, got {bead.type!r}")
                else:
                    b = len(types)
                    types.append(spec.type_names.index(bead.type))
                for a in members:
                    if atom_bead[a] != -1:
                        raise MappingError(f"atom {a} ({atom_names[a]}) of residue {rname} is in two beads")
                    atom_bead[a] = b
                for a in _select_atoms(bead.force_atoms, rname, idx, names):
                    if a in force_extra:
                        raise MappingError(f"atom {a} ({atom_names[a]}) of residue {rname} is in the force_atoms of "
                                           "two beads")
                    force_extra[a] = b
            if len(types) - first_bead > 1:
                multi_bead.append(rname)
        if not types:
            raise MappingError("the mapping makes no bead")
        atom_force_bead = atom_bead.copy()
        for a, b in force_extra.items():
            if atom_bead[a] >= 0:
                raise MappingError(f"atom {a} ({atom_names[a]}) of residue {res_names[atom_res[a]]} is in bead {atom_bead[a]} "
                                   "and in force_atoms: force_atoms are atoms left out of every bead")
            atom_force_bead[a] = b
        lost = np.flatnonzero(atom_bead < 0)
        if len(lost) and not spec.allow_unmapped:
            raise MappingError(f"{len(lost)} atoms (first: {lost[:5].tolist()}, "
                               f"{[atom_names[a] for a in lost[:5]]}) belong to no bead; every atom must be mapped "
                               "so that no force is lost, or set `allow_unmapped: true` in the mapping spec to leave "
                               "them out on purpose (valid when no constraint joins them to a mapped atom)")
        if np.any(masses <= 0):
            raise MappingError("atom masses must be positive (dalton)")
        if spec.masses:  # the spec's masses must be the data's
            named = spec.atom_masses(residues, n_atoms)
            off = np.flatnonzero(np.abs(named - masses) > 1e-3)
            if len(off):
                a = int(off[0])
                raise MappingError(f"the mapping spec's masses differ from the data's at {len(off)} atom(s), first atom "
                                   f"{a} ({atom_names[a]} of residue {res_names[atom_res[a]]}): spec {named[a]:g} Da, "
                                   f"data {masses[a]:g} Da; remove `masses:` from the spec or correct it")
        bead_masses = np.bincount(atom_bead[atom_bead >= 0], weights=masses[atom_bead >= 0], minlength=len(types))
        bond_arr = None if bonds is None else np.asarray(list(bonds), np.int64).reshape(-1, 2)
        if bond_arr is not None and len(bond_arr) == 0 and multi_bead:
            raise MappingError(f"residue(s) {sorted(set(multi_bead))[:5]} map to several beads but the topology has "
                               "no bonds, so the beads cannot be bonded: give a topology with bonds (a PDB with "
                               "CONECT records, a GROMACS .top, an OpenMM topology)")
        topology = None
        if bond_arr is not None:
            _check_constraints(spec, atom_force_bead, bond_arr, atom_res, res_names, atom_names, hydrogens)
            topology = _bead_bonds(atom_bead, bond_arr, len(types))
            atom_ref = _whole_tree(atom_ref, bond_arr)
        return cls(atom_bead, atom_ref, masses, np.asarray(types, np.int32), bead_masses, list(spec.type_names),
                   topology, atom_force_bead)

    @classmethod
    def from_topology(cls, spec: MappingSpec, topology, masses: np.ndarray) -> "CGMap":
        """From an OpenMM or mdtraj topology (its bonds make the bead bonds)."""
        residues = []
        res_iter = topology.residues() if callable(topology.residues) else topology.residues
        hydrogens = []
        for res in res_iter:
            atoms = list(res.atoms() if callable(res.atoms) else res.atoms)
            residues.append((res.name, [(a.index, a.name) for a in atoms]))
        atoms_iter = topology.atoms() if callable(topology.atoms) else topology.atoms
        for a in atoms_iter:
            el = getattr(a, "element", None)
            sym = getattr(el, "symbol", None) if el is not None else None
            hydrogens.append(sym == "H" if sym else str(a.name).upper().startswith("H"))
        n = sum(len(a) for _, a in residues)
        if n != len(masses):
            raise MappingError(f"topology has {n} atoms but {len(masses)} masses were given")
        bonds_iter = topology.bonds() if callable(topology.bonds) else topology.bonds
        bonds = [(b[0].index, b[1].index) for b in bonds_iter]
        return cls.build(spec, residues, masses, bonds, np.asarray(hydrogens, bool))

    # ------------------------------------------------------------------ per-frame maps
    def map_frames(self, positions: np.ndarray, forces: np.ndarray,
                   boxes: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """(F, n_atoms, 3) nm / kJ/mol/nm + (F, 3, 3) nm (None or all zeros: no box) -> bead
        positions and forces (F, n_beads, 3)."""
        positions = np.asarray(positions, dtype=np.float64)
        forces = np.asarray(forces, dtype=np.float64)
        if positions.shape[1:] != (self.n_atoms, 3) or forces.shape != positions.shape:
            raise MappingError(f"positions {positions.shape} / forces {forces.shape} do not match the "
                               f"mapping's {self.n_atoms} atoms")
        periodic = boxes is not None and bool(np.any(np.asarray(boxes) != 0))
        if periodic:
            boxes = np.asarray(boxes, dtype=np.float64)
        nb = self.n_beads
        on = self.atom_bead >= 0
        bead_of = self.atom_bead[on]
        w = self.atom_masses[on] / self.bead_masses[bead_of]
        cg_pos = np.empty((positions.shape[0], nb, 3))
        cg_f = np.empty((positions.shape[0], nb, 3))
        f_on = self.atom_force_bead >= 0
        f_bead = self.atom_force_bead[f_on]
        for f in range(positions.shape[0]):
            x = self.make_whole(positions[f], boxes[f]) if periodic else positions[f]
            com = np.zeros((nb, 3))
            for d in range(3):
                com[:, d] = np.bincount(bead_of, weights=w * x[on, d], minlength=nb)
                cg_f[f, :, d] = np.bincount(f_bead, weights=forces[f, f_on, d], minlength=nb)
            cg_pos[f] = wrap_positions(com, boxes[f]) if periodic else com
        return cg_pos, cg_f

    def make_whole(self, x: np.ndarray, box: np.ndarray) -> np.ndarray:
        """Every atom moved to the minimum image of its offset from its parent (level by level)."""
        x = np.array(x, dtype=np.float64)
        inv = np.linalg.inv(box)
        for idx in self._levels:
            d = x[idx] - x[self.atom_ref[idx]]
            s = d @ inv
            s -= np.round(s)
            x[idx] = x[self.atom_ref[idx]] + s @ box
        return x


def _whole_tree(atom_ref: np.ndarray, bonds: np.ndarray) -> np.ndarray:
    """Parents for making molecules whole: a breadth-first tree along the bonds from each
    molecule's first atom; atoms without bonds keep their residue's first atom."""
    n = len(atom_ref)
    if len(bonds) == 0:
        return atom_ref
    nb: list[list[int]] = [[] for _ in range(n)]
    for i, j in bonds.tolist():
        nb[i].append(j)
        nb[j].append(i)
    parent = atom_ref.copy()
    seen = np.zeros(n, bool)
    for start in range(n):
        if seen[start] or not nb[start]:
            continue
        seen[start] = True
        parent[start] = start
        queue = [start]
        while queue:
            nxt = []
            for a in queue:
                for c in nb[a]:
                    if not seen[c]:
                        seen[c] = True
                        parent[c] = a
                        nxt.append(c)
            queue = nxt
    # an atom without bonds whose residue's first atom is bonded hangs from it (level 1)
    return parent


def _bead_bonds(atom_bead: np.ndarray, bonds: np.ndarray, n_beads: int) -> CGTopology:
    """Beads bonded when an AA bond joins their atoms, directly or through unmapped atoms."""
    n = len(atom_bead)
    # contract the unmapped atoms: each connected group of unmapped atoms acts as one node
    parent = np.arange(n)

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, j in bonds.tolist():
        if atom_bead[i] < 0 and atom_bead[j] < 0:
            ri, rj = find(i), find(j)
            if ri != rj:
                parent[ri] = rj
    touching: dict[int, set[int]] = {}
    pairs = set()
    for i, j in bonds.tolist():
        bi, bj = atom_bead[i], atom_bead[j]
        if bi >= 0 and bj >= 0:
            if bi != bj:
                pairs.add((min(bi, bj), max(bi, bj)))
        elif bi >= 0:
            touching.setdefault(find(j), set()).add(int(bi))
        elif bj >= 0:
            touching.setdefault(find(i), set()).add(int(bj))
    for beads in touching.values():
        b = sorted(beads)
        pairs.update((x, y) for k, x in enumerate(b) for y in b[k + 1:])
    return CGTopology(n_beads, np.asarray(sorted(pairs), np.int64).reshape(-1, 2))


def _select_atoms(selection, rname: str, idx: list[int], names: list[str]) -> list[int]:
    """Atom indices of residue ``rname`` (atoms ``idx`` named ``names``) picked by ``selection``:
    atom names or 1-based indices (water atom names match their other spellings)."""
    members = []
    for sel in selection:
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
    return members


def _check_constraints(spec: MappingSpec, atom_bead: np.ndarray, bonds: np.ndarray, atom_res: np.ndarray,
                       res_names: list[str], atom_names: list[str], hydrogens: np.ndarray | None) -> None:
    """:class:`MappingError` when a constrained atom pair is split between beads or between a bead
    and no bead: its constraint force (absent from the AA forces) would be lost."""
    if spec.constraints == "none" or len(bonds) == 0:
        return
    if spec.constraints == "all-bonds":
        pairs = bonds
    else:
        h = (np.array([n.upper().startswith("H") for n in atom_names]) if hydrogens is None
             else np.asarray(hydrogens, bool))
        pairs = bonds[h[bonds[:, 0]] | h[bonds[:, 1]]]
        # rigid water: every atom pair of a water residue is constrained
        water = [r for r, name in enumerate(res_names) if name.upper() in WATER_RESIDUES]
        if water:
            extra = []
            for r in water:
                idx = np.flatnonzero(atom_res == r)
                extra += [(a, b) for k, a in enumerate(idx) for b in idx[k + 1:]]
            pairs = np.concatenate([pairs, np.asarray(extra, np.int64).reshape(-1, 2)])
    for i, j in pairs.tolist():
        bi, bj = atom_bead[i], atom_bead[j]
        if bi == bj:
            continue
        where = f"atoms {i} ({atom_names[i]}) and {j} ({atom_names[j]}) of residue {res_names[atom_res[i]]}"
        if bi < 0 or bj < 0:
            raise MappingError(
                f"{where} are joined by a constraint ({spec.constraints}) but only one of them is in a bead: the "
                "constraint force, which the AA force output omits, would be lost. Put both in the same bead "
                "(e.g. a heavy atom with its hydrogens), leave both out, or declare `constraints:` of the AA run "
                "in the mapping spec if it had none")
        raise MappingError(
            f"{where} are joined by a constraint ({spec.constraints}) but lie in two beads ({bi} and {bj}): the "
            "constraint force, which the AA force output omits, would not cancel inside one bead. Map every "
            "constrained group (e.g. a heavy atom with its hydrogens) into one bead, or declare `constraints:` "
            "of the AA run in the mapping spec if it had none")


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
        "mapping_sha256": file_sha256(spec.source) if spec.source and Path(spec.source).is_file() else None,
        "mapping_rule": "bead position = COM of its atoms (molecule made whole, wrapped into the box); "
                        "bead force = sum of atomic forces; bead mass = sum of atomic masses",
        "unmapped_atoms": int(np.count_nonzero(cgmap.atom_bead < 0)), "constraints_declared": spec.constraints,
        "n_atoms": int(cgmap.n_atoms), "n_beads": int(cgmap.n_beads), "stride": int(stride),
        "mapped": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    })
    prov.update(provenance or {})
    if not np.any(np.asarray(box) != 0):
        box = np.zeros((len(times), 3, 3))
    return CGDataset(positions=cg_pos, forces=cg_f, boxes=box, times=times, bead_types=cgmap.bead_types,
                     type_names=cgmap.type_names, masses=cgmap.bead_masses, potential_energy=pe, provenance=prov,
                     topology=cgmap.topology, temperature_K=temperature_K, bead_names=dict(spec.bead_names))
