"""Build ``models/untrained-demo``: the UNTRAINED stand-in bundle that ``cgkd demo`` runs until a
trained model (``models/des-student``) ships.

Random weights (seed 0), graph network with a 0.6 nm cutoff (cheap on a CPU), DES bead types and
a placeholder wall: it shows the machinery and its speed, not physics. ``cgkd demo`` builds it
on first use; this script rebuilds it on purpose. The directory is not tracked by git.

    uv run python models/build_untrained.py [--overwrite] [--seed 0]
"""
import argparse
from pathlib import Path

from openmm_cgkd.cli.demo import UNTRAINED_DEFAULT, build_demo_bundle

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--overwrite", action="store_true", help="replace an existing bundle")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights (default 0)")
    args = p.parse_args()
    path = build_demo_bundle(Path(__file__).resolve().parent / UNTRAINED_DEFAULT, overwrite=args.overwrite,
                             seed=args.seed)
    print(f"wrote UNTRAINED bundle {path}")
