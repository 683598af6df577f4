"""System definitions (YAML): force field, composition or structure, box, temperature, MD settings.

Three kinds of AA system, told apart by the ``forcefield`` entry:

``opls``
    ``forcefield: opls-des.yaml`` (the package's OPLS molecule file) with ``composition`` and
    ``box_nm``: the box is packed by ``cgkd aa-build`` (packmol). Smaller (or larger) boxes at the
    same density come from :meth:`SystemDefinition.resized`: the composition is scaled keeping
    its ratios and the cubic box edge by (mass ratio)^(1/3).
``openmm``
    ``forcefield: [amber14-all.xml, implicit/gbn2.xml]`` (OpenMM force field XML files: the names
    OpenMM ships, or files next to the definition) with ``structure: start.pdb`` (PDB or PDBx/mmCIF):
    the structure gives the topology, the start positions and the box (its CRYST1; none: not periodic).
``gromacs``
    ``forcefield: topol.top`` (a GROMACS topology; ``gromacs_include_dir`` where its ``#include``
    files lie, default: the GROMACS installation's ``share/gromacs/top``) with ``structure: conf.gro``.

``nonbonded`` (``PME``, ``CutoffPeriodic``, ``CutoffNonPeriodic``, ``NoCutoff``; default ``PME`` with
a box, ``NoCutoff`` without) applies to the ``openmm`` and ``gromacs`` kinds; ``cutoff_nm`` to the
methods with a cutoff. :meth:`SystemDefinition.create_openmm` builds the OpenMM topology and system
of any kind.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from openmm_cgkd.data.opls import ForceField, load_forcefield
from openmm_cgkd.errors import MissingFileError, UsageError
from openmm_cgkd.fileio import file_sha256

__all__ = ["SystemDefinition", "AVOGADRO_G_PER_DALTON"]

AVOGADRO_G_PER_DALTON = 1.66053906660e-24  # g per dalton


# the keys of a system definition file (anything else is a typo, refused)
_KEYS = ("name", "forcefield", "mapping", "composition", "box_nm", "temperature_K", "timestep_fs",
         "friction_per_ps", "cutoff_nm", "constraints", "scale_14", "structure", "nonbonded", "gromacs_include_dir")
_CONSTRAINTS = (None, "HBonds")  # what openmm_cgkd.data.opls.create_system supports
NONBONDED_METHODS = ("PME", "CutoffPeriodic", "CutoffNonPeriodic", "NoCutoff")
_PERIODIC_METHODS = ("PME", "CutoffPeriodic")
_STRUCTURE_SUFFIXES = {"openmm": (".pdb", ".cif", ".pdbx"), "gromacs": (".gro", ".pdb")}


@dataclass
class SystemDefinition:
    name: str
    forcefield_path: Path
    composition: dict[str, int]
    box_nm: float
    temperature_K: float = 298.1
    timestep_fs: float = 2.0
    friction_per_ps: float = 1.0
    cutoff_nm: float = 1.2
    constraints: str | None = "HBonds"
    mapping_path: Path | None = None
    scale_14: float | None = None  # 1-4 Coulomb and LJ scale; None = the force field's (OPLS-DES: 0.5)
    source: str = ""
    kind: str = "opls"  # "opls" | "openmm" | "gromacs" (see the module docstring)
    forcefield_files: tuple[str, ...] = ()  # openmm kind: XML files (paths, or names OpenMM ships)
    structure_path: Path | None = None  # openmm / gromacs kinds: topology, start positions and box
    nonbonded: str = "PME"  # openmm / gromacs kinds: OpenMM's nonbonded method
    gromacs_include_dir: Path | None = None
    box: np.ndarray | None = field(default=None, repr=False, compare=False)  # (3, 3) nm, structure kinds
    _ff: ForceField | None = field(default=None, repr=False, compare=False)
    _structure: object = field(default=None, repr=False, compare=False)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "SystemDefinition":
        import yaml

        path = Path(path)
        if not path.is_file():
            raise MissingFileError(f"system definition not found: {path} (the DES one is systems/des/system.yaml)")
        try:
            d = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise UsageError(f"{path} is not valid YAML: {exc}") from None
        if not isinstance(d, dict):
            raise UsageError(f"{path} is not a system definition (a YAML mapping with forcefield, composition, box_nm)")
        base = path.parent
        extra = sorted(str(k) for k in d if k not in _KEYS)
        if extra:  # a misspelt setting must not run at its default
            raise UsageError(f"{path}: unknown key(s) {extra}; known keys: {', '.join(_KEYS)}")
        kind = _kind_of(d.get("forcefield"), path)
        required = ("forcefield", "composition", "box_nm", "temperature_K") if kind == "opls" else \
            ("forcefield", "structure", "temperature_K")
        missing = [k for k in required if k not in d]
        if missing:  # temperature_K too: the data's temperature is never assumed (it is every model's default)
            raise UsageError(f"{path}: missing key(s) {missing}")
        if kind != "opls":
            return cls._from_structure(d, path, kind)
        wrong = [k for k in ("structure", "nonbonded", "gromacs_include_dir") if k in d]
        if wrong:
            raise UsageError(f"{path}: {wrong} go with an OpenMM XML or GROMACS .top force field; an OPLS "
                             "molecule file is packed from composition and box_nm")
        if not isinstance(d["composition"], dict):
            raise UsageError(f"{path}: composition must be a mapping of molecule -> count, got {d['composition']!r}")

        def number(key, default, kind=float):
            value = d.get(key, default)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
                raise UsageError(f"{path}: {key} must be {'an integer' if kind is int else 'a number'}, got {value!r}")
            if not math.isfinite(value):
                raise UsageError(f"{path}: {key} must be finite, got {value!r}")
            return kind(value)

        composition = {}
        for k, v in d["composition"].items():
            if isinstance(v, bool) or not isinstance(v, int):
                raise UsageError(f"{path}: composition.{k} must be an integer count, got {v!r}")
            composition[str(k)] = int(v)
        constraints = d.get("constraints", "HBonds")
        if constraints not in _CONSTRAINTS:
            raise UsageError(f"{path}: constraints must be one of {list(_CONSTRAINTS)}, got {constraints!r}")
        new = cls(
            name=str(d.get("name", path.stem)), forcefield_path=(base / str(d["forcefield"])).resolve(),
            composition=composition, box_nm=number("box_nm", None),
            temperature_K=number("temperature_K", None), timestep_fs=number("timestep_fs", 2.0),
            friction_per_ps=number("friction_per_ps", 1.0), cutoff_nm=number("cutoff_nm", 1.2),
            constraints=constraints,
            scale_14=None if d.get("scale_14") is None else number("scale_14", None),
            mapping_path=(base / str(d["mapping"])).resolve() if d.get("mapping") else None,
            source=str(path.resolve()))
        if not (new.temperature_K > 0 and new.timestep_fs > 0 and new.friction_per_ps >= 0 and new.cutoff_nm > 0):
            raise UsageError(f"{path}: need temperature_K > 0, timestep_fs > 0, friction_per_ps >= 0 and "
                             f"cutoff_nm > 0, got {new.temperature_K}, {new.timestep_fs}, {new.friction_per_ps}, "
                             f"{new.cutoff_nm}")
        if new.scale_14 is not None and not 0.0 <= new.scale_14 <= 1.0:
            raise UsageError(f"{path}: scale_14 must lie in [0, 1], got {new.scale_14}")
        if not new.forcefield_path.is_file():
            raise MissingFileError(f"{path}: force field {new.forcefield_path.name} not found next to it")
        unknown = [k for k in new.composition if k not in new.forcefield.molecules]
        if unknown:
            raise UsageError(f"{path}: composition names molecule(s) {unknown} that the force field "
                             f"{new.forcefield_path.name} lacks (it has {sorted(new.forcefield.molecules)})")
        if any(v < 0 for v in new.composition.values()) or new.n_molecules == 0 or not new.box_nm > 0:
            raise UsageError(f"{path}: molecule counts must be >= 0 (not all 0) and box_nm > 0")
        return new

    @classmethod
    def _from_structure(cls, d: dict, path: Path, kind: str) -> "SystemDefinition":
        """An ``openmm`` or ``gromacs`` system: force field files plus a structure (module docstring)."""
        base = path.parent
        wrong = [k for k in ("composition", "box_nm", "scale_14") if k in d]
        if wrong:
            raise UsageError(f"{path}: {wrong} go with an OPLS molecule file; with {'XML files' if kind == 'openmm' else 'a .top'} "
                             "the structure gives the molecules and the box")
        if kind == "gromacs" and "gromacs_include_dir" in d and not isinstance(d["gromacs_include_dir"], str):
            raise UsageError(f"{path}: gromacs_include_dir must be a directory name")
        if kind == "openmm" and "gromacs_include_dir" in d:
            raise UsageError(f"{path}: gromacs_include_dir goes with a GROMACS .top force field")

        def number(key, default):
            value = d.get(key, default)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise UsageError(f"{path}: {key} must be a finite number, got {value!r}")
            return float(value)

        structure = (base / str(d["structure"])).resolve()
        if structure.suffix.lower() not in _STRUCTURE_SUFFIXES[kind]:
            raise UsageError(f"{path}: structure must be a {' or '.join(_STRUCTURE_SUFFIXES[kind])} file for a "
                             f"{kind} system, got {structure.name}")
        if not structure.is_file():
            raise MissingFileError(f"{path}: structure {structure.name} not found next to it")
        constraints = d.get("constraints", "HBonds")
        if constraints not in _CONSTRAINTS:
            raise UsageError(f"{path}: constraints must be one of {list(_CONSTRAINTS)}, got {constraints!r}")
        if kind == "openmm":
            raw = d["forcefield"] if isinstance(d["forcefield"], list) else [d["forcefield"]]
            files = tuple(_resolve_xml(str(f), base, path) for f in raw)
            ff_path = path.resolve()  # the XML files are forcefield_files; this is the definition itself
        else:
            files = ()
            ff_path = (base / str(d["forcefield"])).resolve()
            if not ff_path.is_file():
                raise MissingFileError(f"{path}: GROMACS topology {ff_path.name} not found next to it")
        include = None
        if kind == "gromacs":
            include = (base / str(d["gromacs_include_dir"])).resolve() if d.get("gromacs_include_dir") \
                else _default_gromacs_include_dir()
        new = cls(name=str(d.get("name", path.stem)), forcefield_path=ff_path, composition={}, box_nm=0.0,
                  temperature_K=number("temperature_K", None), timestep_fs=number("timestep_fs", 2.0),
                  friction_per_ps=number("friction_per_ps", 1.0), cutoff_nm=number("cutoff_nm", 1.0),
                  constraints=constraints,
                  mapping_path=(base / str(d["mapping"])).resolve() if d.get("mapping") else None,
                  source=str(path.resolve()), kind=kind, forcefield_files=files, structure_path=structure,
                  gromacs_include_dir=include)
        if not (new.temperature_K > 0 and new.timestep_fs > 0 and new.friction_per_ps >= 0 and new.cutoff_nm > 0):
            raise UsageError(f"{path}: need temperature_K > 0, timestep_fs > 0, friction_per_ps >= 0 and "
                             f"cutoff_nm > 0, got {new.temperature_K}, {new.timestep_fs}, {new.friction_per_ps}, "
                             f"{new.cutoff_nm}")
        top, _ = new._read_structure()
        vectors = top.getPeriodicBoxVectors()
        new.box = None if vectors is None else np.asarray([[x.value_in_unit(_nm()) for x in v] for v in vectors])
        method = d.get("nonbonded", "PME" if new.box is not None else "NoCutoff")
        if method not in NONBONDED_METHODS:
            raise UsageError(f"{path}: nonbonded must be one of {list(NONBONDED_METHODS)}, got {method!r}")
        if method in _PERIODIC_METHODS and new.box is None:
            raise UsageError(f"{path}: nonbonded {method} needs a periodic box, and {structure.name} has none "
                             "(a CRYST1 record / the .gro box line); use NoCutoff or CutoffNonPeriodic")
        if method not in _PERIODIC_METHODS:
            new.box = None  # not periodic: the structure's box (if any) is not used
        new.nonbonded = method
        new.box_nm = 0.0 if new.box is None else float(np.min(np.linalg.norm(new.box, axis=1)))
        if new.box is not None and new.cutoff_nm >= 0.5 * new.box_nm:
            raise UsageError(f"{path}: cutoff_nm {new.cutoff_nm} must be below half the shortest box edge "
                             f"({new.box_nm:.3f} nm)")
        new.composition = _residue_counts(top)
        return new

    @property
    def periodic(self) -> bool:
        """Whether the AA system has a periodic box."""
        return self.kind == "opls" or self.box is not None

    def _read_structure(self):
        """(OpenMM topology, positions nm) of the structure file (openmm / gromacs kinds)."""
        if self._structure is None:
            from openmm import app

            p = self.structure_path
            try:
                if p.suffix.lower() == ".gro":
                    gro = app.GromacsGroFile(str(p))
                    vectors = gro.getPeriodicBoxVectors()
                    top = self._gromacs_top(vectors).topology
                    pos = gro.getPositions(asNumpy=True).value_in_unit(_nm())
                else:
                    f = app.PDBxFile(str(p)) if p.suffix.lower() in (".cif", ".pdbx") else app.PDBFile(str(p))
                    top, pos = f.topology, f.getPositions(asNumpy=True).value_in_unit(_nm())
                    if self.kind == "gromacs":  # the .top's topology, the PDB's positions and box
                        top = self._gromacs_top(top.getPeriodicBoxVectors()).topology
            except (ValueError, KeyError, IndexError) as exc:  # the file readers' complaints about their input
                raise UsageError(f"{self.source or p}: cannot read {p.name}: {exc}") from None
            if top.getNumAtoms() != len(pos):
                raise UsageError(f"{self.source or p}: the topology has {top.getNumAtoms()} atoms and {p.name} "
                                 f"{len(pos)}: they must describe the same system in the same order")
            self._structure = (top, np.asarray(pos, float))
        return self._structure

    def _gromacs_top(self, box_vectors):
        from openmm import app

        include = str(self.gromacs_include_dir) if self.gromacs_include_dir else None
        try:
            return app.GromacsTopFile(str(self.forcefield_path), periodicBoxVectors=box_vectors, includeDir=include)
        except (ValueError, OSError) as exc:  # a missing #include, an unknown directive
            hint = "" if include else " (set gromacs_include_dir to the GROMACS share/gromacs/top directory)"
            raise UsageError(f"{self.source}: cannot read {self.forcefield_path.name}: {exc}{hint}") from None

    def start_positions(self) -> np.ndarray | None:
        """The structure's positions (n_atoms, 3) nm; None for the ``opls`` kind (packed by packmol)."""
        return None if self.kind == "opls" else self._read_structure()[1].copy()

    def create_openmm(self):
        """``(topology, system)``: the OpenMM Topology and System of the AA system, any kind.

        Masses are the force field's (physical) masses; hydrogen-mass repartitioning, if any, is
        the caller's (:func:`~openmm_cgkd.data.aamd.repartition_hydrogen_masses`)."""
        import openmm as mm
        from openmm import app, unit

        if self.kind == "opls":
            from openmm_cgkd.data.opls import build_topology, create_system

            top = build_topology(self.forcefield, self.composition, self.box_vectors())
            return top, create_system(self.forcefield, top, cutoff_nm=self.cutoff_nm, constraints=self.constraints)
        top, _ = self._read_structure()
        if self.box is not None:
            top.setPeriodicBoxVectors([mm.Vec3(*row) for row in self.box] * unit.nanometer)
        else:
            top.setPeriodicBoxVectors(None)
        options = {"nonbondedMethod": getattr(app, self.nonbonded),
                   "constraints": app.HBonds if self.constraints == "HBonds" else None}
        if self.nonbonded != "NoCutoff":
            options["nonbondedCutoff"] = self.cutoff_nm * unit.nanometer
        try:
            if self.kind == "openmm":
                system = app.ForceField(*self.forcefield_files).createSystem(top, **options)
            else:
                system = self._gromacs_top(None if self.box is None else top.getPeriodicBoxVectors()) \
                    .createSystem(**options)
        except ValueError as exc:  # OpenMM: no template for a residue, a method the force field lacks
            raise UsageError(f"{self.source}: the force field cannot build the system of "
                             f"{self.structure_path.name}: {str(exc).splitlines()[0]}") from None
        return top, system

    @property
    def forcefield(self) -> ForceField:
        """The force field, with ``scale_14`` applied to its 1-4 Coulomb and LJ scales when set."""
        if self._ff is None:
            ff = load_forcefield(self.forcefield_path)
            if self.scale_14 is not None:
                if not 0.0 <= self.scale_14 <= 1.0:
                    raise ValueError(f"scale_14 must lie in [0, 1], got {self.scale_14}")
                ff = replace(ff, fudge_lj=self.scale_14, fudge_qq=self.scale_14)
            self._ff = ff
        return self._ff

    @property
    def n_molecules(self) -> int:
        """Molecules (opls: the composition's count; structure kinds: bonded clusters of atoms)."""
        if self.kind != "opls":
            return _molecule_count(self._read_structure()[0])
        return int(sum(self.composition.values()))

    @property
    def n_atoms(self) -> int:
        if self.kind != "opls":
            return int(self._read_structure()[0].getNumAtoms())
        ff = self.forcefield
        return int(sum(ff.molecules[k].n_atoms * n for k, n in self.composition.items()))

    @property
    def total_mass(self) -> float:
        ff = self.forcefield
        return float(sum(ff.molecules[k].mass * n for k, n in self.composition.items()))

    @property
    def density_g_cm3(self) -> float | None:
        """Mass density of the OPLS box (g/cm^3); None for the structure kinds."""
        if self.kind != "opls":
            return None
        return self.total_mass * AVOGADRO_G_PER_DALTON / (self.box_nm * 1e-7) ** 3

    def box_vectors(self) -> np.ndarray | None:
        """(3, 3) box vectors as rows (nm); None without a periodic box."""
        if self.kind != "opls":
            return None if self.box is None else self.box.copy()
        return np.eye(3) * self.box_nm

    def resized(self, n_molecules: int | None = None, scale: float | None = None) -> "SystemDefinition":
        """Same density and composition ratios, ``n_molecules`` in total (or counts x ``scale``).

        :class:`~openmm_cgkd.errors.UsageError` when ``n_molecules`` cannot keep the ratios exactly
        (e.g. 3 for reline's 1:1:2): the message names the nearest sizes that can."""
        if self.kind != "opls":
            raise UsageError(f"{self.name}: --molecules / --scale resize a packed (OPLS molecule file) system; "
                             f"this {self.kind} system is its structure {self.structure_path.name}")
        if (n_molecules is None) == (scale is None):
            raise UsageError("give exactly one of n_molecules or scale")
        if n_molecules is not None and int(n_molecules) < 1:
            raise UsageError(f"the molecule count must be >= 1, got {n_molecules}")
        if scale is None:
            scale = n_molecules / self.n_molecules
        if not scale > 0:
            raise UsageError(f"scale must be positive, got {scale}")
        comp = self._scaled_counts(scale)
        if n_molecules is not None and sum(comp.values()) != int(n_molecules):
            fits = [m for m in range(1, int(n_molecules) + 4 * self.n_molecules + 1)
                    if sum(self._scaled_counts(m / self.n_molecules).values()) == m]
            near = sorted(fits, key=lambda m: (abs(m - n_molecules), m))[:2]
            ratio = ":".join(str(v) for v in self.composition.values())
            raise UsageError(f"{n_molecules} molecules cannot keep the composition {ratio} "
                             f"({', '.join(self.composition)}): it rounds to "
                             f"{'/'.join(str(v) for v in comp.values())} = {sum(comp.values())} molecules; "
                             f"nearest sizes that keep it: {', '.join(map(str, sorted(near)))}")
        new = replace(self, composition=comp, _ff=self._ff)
        mass_ratio = new.total_mass / self.total_mass
        new.box_nm = self.box_nm * mass_ratio ** (1.0 / 3.0)
        new.name = f"{self.name}-{new.n_molecules}"
        return new

    def _scaled_counts(self, scale: float) -> dict[str, int]:
        return {k: max(1, int(round(v * scale))) if v > 0 else 0 for k, v in self.composition.items()}

    def to_dict(self, relative_to: str | Path | None = None) -> dict:
        """Portable description: file paths relative to ``relative_to`` (a run directory) plus the
        force field's sha256, never an absolute path of this machine."""
        base = Path(relative_to).resolve() if relative_to is not None else Path.cwd()

        def rel(p) -> str:
            return os.path.relpath(Path(p).resolve(), base) if p else ""

        if self.kind != "opls":
            local = [f for f in self.forcefield_files if Path(f).is_absolute()]
            out = {"name": self.name, "kind": self.kind, "composition": dict(self.composition),
                   "box_nm": None if self.box is None else self.box_nm,
                   "box_vectors_nm": None if self.box is None else self.box.tolist(),
                   "nonbonded": self.nonbonded, "structure": rel(self.structure_path),
                   "structure_sha256": file_sha256(self.structure_path),
                   "temperature_K": self.temperature_K, "timestep_fs": self.timestep_fs,
                   "friction_per_ps": self.friction_per_ps, "cutoff_nm": self.cutoff_nm,
                   "constraints": self.constraints, "n_atoms": self.n_atoms, "source": rel(self.source)}
            if self.kind == "openmm":
                import openmm

                out["forcefield"] = [rel(f) if f in local else f for f in self.forcefield_files]
                out["forcefield_sha256"] = {rel(f): file_sha256(f) for f in local}
                out["openmm_version"] = openmm.__version__  # the built-in XML files are OpenMM's
            else:
                out["forcefield"] = rel(self.forcefield_path)
                out["forcefield_sha256"] = file_sha256(self.forcefield_path)
            return out
        ff = self.forcefield
        return {"name": self.name, "kind": "opls", "forcefield": rel(self.forcefield_path),
                "forcefield_sha256": file_sha256(self.forcefield_path),
                "scale_14": {"coulomb": ff.fudge_qq, "lj": ff.fudge_lj},
                "composition": dict(self.composition),
                "box_nm": self.box_nm, "temperature_K": self.temperature_K, "timestep_fs": self.timestep_fs,
                "friction_per_ps": self.friction_per_ps, "cutoff_nm": self.cutoff_nm,
                "constraints": self.constraints, "density_g_cm3": round(self.density_g_cm3, 5),
                "n_atoms": self.n_atoms, "source": rel(self.source)}


def _nm():
    from openmm import unit

    return unit.nanometer


def _kind_of(forcefield, path: Path) -> str:
    """The system kind from the ``forcefield`` entry (module docstring); UsageError otherwise."""
    names = forcefield if isinstance(forcefield, list) else [forcefield]
    if forcefield is None or not names or not all(isinstance(n, str) for n in names):
        raise UsageError(f"{path}: forcefield must be an OPLS molecule file (.yaml), OpenMM XML file(s) (.xml) or "
                         f"a GROMACS topology (.top), got {forcefield!r}")
    suffixes = {Path(n).suffix.lower() for n in names}
    if suffixes <= {".xml"}:
        return "openmm"
    if len(names) == 1 and suffixes <= {".yaml", ".yml"}:
        return "opls"
    if len(names) == 1 and suffixes == {".top"}:
        return "gromacs"
    raise UsageError(f"{path}: forcefield must be one OPLS molecule file (.yaml), OpenMM XML file(s) (.xml) or "
                     f"one GROMACS topology (.top), got {forcefield!r}")


def _resolve_xml(name: str, base: Path, path: Path) -> str:
    """A force field XML: a file next to the definition (absolute path) or a name OpenMM ships."""
    local = (base / name).resolve()
    if local.is_file():
        return str(local)
    from openmm.app import forcefield as off

    for d in off._getDataDirectories():
        if Path(d, name).is_file():
            return name
    raise MissingFileError(f"{path}: force field file {name} is neither next to it nor one that OpenMM ships "
                           "(e.g. amber14-all.xml, amber14/tip3p.xml, implicit/gbn2.xml)")


def _default_gromacs_include_dir() -> Path | None:
    """The GROMACS installation's ``share/gromacs/top`` (from ``gmx`` on PATH), if there is one."""
    import shutil

    gmx = shutil.which("gmx") or shutil.which("gmx_mpi")
    candidates = ([Path(gmx).resolve().parents[1] / "share" / "gromacs" / "top"] if gmx else []) + \
        [Path("/usr/share/gromacs/top"), Path("/usr/local/gromacs/share/gromacs/top")]
    return next((c for c in candidates if c.is_dir()), None)


def _residue_counts(topology) -> dict[str, int]:
    """{residue name: count}, in order of first appearance (the composition of a structure)."""
    counts: dict[str, int] = {}
    for r in topology.residues():
        counts[r.name] = counts.get(r.name, 0) + 1
    return counts


def _molecule_count(topology) -> int:
    """Connected clusters of bonded atoms (a molecule each); the atoms of one residue are one
    molecule even without bonds between them (a GROMACS water held by ``[settles]``)."""
    parent = list(range(topology.getNumAtoms()))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    pairs = [(a.index, b.index) for a, b in topology.bonds()]
    for r in topology.residues():
        atoms = [a.index for a in r.atoms()]
        pairs += [(atoms[0], i) for i in atoms[1:]]
    for a, b in pairs:
        parent[find(a)] = find(b)
    return len({find(i) for i in range(len(parent))})
