"""Step time of an ensemble of K CG potentials vs one member (energy + forces, TorchScript).

The performance goal (issue 2, part 4): an ensemble of 8 at no more than 2x one member's step
time. Prints, per architecture, milliseconds per evaluation for one member, for the ensemble
module (shared pair list, one backward pass) and for K separate member calls, and the ratios.

    uv run python benchmarks/ensemble_step_time.py [--device cuda] [--members 8] [--arch tensornet] [--n-side 10]

System: the DES test box (1,000 beads, 4.484 nm cube, three bead types) on a jittered lattice.
Untrained networks with the shipped config sizes; not a timed test. On a small CPU the
1,000-bead system takes seconds per evaluation: use --n-side 6 there.
"""
import argparse
import time

import numpy as np
import torch

from openmm_cgkd.model.ensemble import EnsemblePotential
from openmm_cgkd.model.potential import CGPotential, load_model_config


def des_system(n_side=10, seed=0):
    """n_side^3 beads at the DES density (n_side=10: the 1,000-bead, 4.484 nm box), types 1:1:2."""
    rng = np.random.default_rng(seed)
    spacing = 4.484 / 10
    box_nm = spacing * n_side
    grid = np.stack(np.meshgrid(*[np.arange(n_side)] * 3, indexing="ij"), -1).reshape(-1, 3) * spacing
    pos = grid + rng.uniform(-0.15, 0.15, grid.shape) * spacing
    n = len(pos)
    types = rng.permutation(np.repeat([0, 1, 2], [n // 4, n // 4, n - 2 * (n // 4)]))
    return torch.as_tensor(types), torch.as_tensor(pos, dtype=torch.float32), torch.eye(3) * box_nm


def timeit(fn, reps, device):
    for _ in range(3):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / reps * 1e3


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--members", type=int, default=8)
    p.add_argument("--arch", nargs="+", default=["graph-network", "tensornet", "equivariant-transformer"])
    p.add_argument("--n-side", type=int, default=10, help="n_side^3 beads at the DES density (10: 1,000 beads)")
    p.add_argument("--reps", type=int, default=10)
    args = p.parse_args()
    device = torch.device(args.device)
    types, pos, box = des_system(args.n_side)
    types, pos, box = types.to(device), pos.to(device), box.to(device)
    print(f"device {device}, N = {len(pos)}, box {float(box[0, 0]):.3f} nm, K = {args.members}; "
          "sizes from openmm_cgkd/model/configs/<architecture>.yaml")
    print(f"{'architecture':26s} {'1 member':>10s} {'ensemble':>10s} {'K calls':>10s} {'ens/1':>7s} {'calls/1':>8s}")
    for arch in args.arch:
        cfg = load_model_config(arch)
        members = []
        for seed in range(args.members):
            torch.manual_seed(seed)
            members.append(CGPotential(cfg).to(device))
        one = torch.jit.script(members[0])
        ens = torch.jit.script(EnsemblePotential(members).to(device))
        separate = [torch.jit.script(m) for m in members]
        t1 = timeit(lambda: one(types, pos, box), args.reps, device)
        tk = timeit(lambda: ens(types, pos, box), args.reps, device)
        tc = timeit(lambda: [m(types, pos, box) for m in separate], args.reps, device)
        print(f"{arch:26s} {t1:9.2f}ms {tk:9.2f}ms {tc:9.2f}ms {tk / t1:7.2f} {tc / t1:8.2f}")


if __name__ == "__main__":
    main()
