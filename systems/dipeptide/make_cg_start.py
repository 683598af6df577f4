"""The dipeptide's 6 beads as a bead PDB (no box: not periodic; CONECT records for its bonds),
from the first committed mapped frame of the AA run (after its 1 ns equilibration): the start
structure of CG MD of the dipeptide.

    uv run python systems/dipeptide/make_cg_start.py [--run-dir systems/dipeptide/aa]
"""
from __future__ import annotations

import argparse
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv=None) -> int:
    from openmm_cgkd.data.aamd import read_mapped
    from openmm_cgkd.data.mapping import MappingSpec
    from openmm_cgkd.systems import get_system
    from openmm_cgkd.topology import dataset_topology, write_bead_pdb

    system = get_system("dipeptide")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-dir", type=Path, default=system.file("aa_run", must_exist=False))
    p.add_argument("--out", type=Path, default=HERE / "cg_start.pdb")
    args = p.parse_args(argv)
    ds = read_mapped(args.run_dir, mapping=MappingSpec.from_yaml(system.file("mapping")))
    write_bead_pdb(args.out, dataset_topology(ds, frame=None), ds.positions[0])
    print(f"{args.out.name}: {ds.positions.shape[1]} beads, {len(ds.topology.bonds)} bonds, "
          f"frame at {ds.times[0]:g} ps")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
