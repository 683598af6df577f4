"""Write ``cg_start.pdb``: a CG start structure of reline (250 Cho, 250 Cl, 500 Urea beads).

The beads sit on a 10x10x10 cubic lattice filling the 4.484 nm box of the paper's system
(spacing 0.448 nm), jittered by up to 0.04 nm per axis, bead types assigned to sites at random
(seeded): no two beads closer than 0.36 nm. Residue/atom names CHO, CL, URE (no elements), as
in ``openmm_cgkd.topology``. Re-run to regenerate (deterministic):

    uv run python systems/des/make_cg_start.py
"""
from pathlib import Path

import numpy as np

from openmm_cgkd.topology import bead_topology_from_counts, write_bead_pdb

COUNTS = {"Cho": 250, "Cl": 250, "Urea": 500}
BOX_NM = 4.484
SEED = 20251030


def cg_start(counts=COUNTS, box_nm=BOX_NM, seed=SEED, jitter_nm=0.04):
    n = sum(counts.values())
    side = int(np.ceil(n ** (1 / 3)))
    spacing = box_nm / side
    grid = (np.arange(side) + 0.5) * spacing
    sites = np.stack(np.meshgrid(grid, grid, grid, indexing="ij"), -1).reshape(-1, 3)
    rng = np.random.default_rng(seed)
    sites = sites[rng.permutation(len(sites))[:n]]
    positions = sites + rng.uniform(-jitter_nm, jitter_nm, sites.shape)
    return bead_topology_from_counts(counts, np.eye(3) * box_nm), positions


if __name__ == "__main__":
    top, pos = cg_start()
    out = write_bead_pdb(Path(__file__).with_name("cg_start.pdb"), top, pos, np.eye(3) * BOX_NM)
    print(f"wrote {out}: {top.getNumAtoms()} beads in a {BOX_NM} nm cubic box")
