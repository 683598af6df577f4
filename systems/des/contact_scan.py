"""Energy of CG models as one bead is pulled into contact with another, in real liquid configurations.

    uv run python systems/des/contact_scan.py BUNDLE [BUNDLE ...] [--pair Cho Cl]
        [--dataset systems/des/study/data/cg.h5] [--frames 5] [--r-min 0.26] [--r-max 0.50]
        [--out systems/des/contact_scan] [--threads 1]

Why a model's g(r) shows a contact the AA liquid does not have: in each of ``--frames`` frames
(evenly spaced over the dataset), the bead of type B nearest to a bead of type A is moved along
their line (all else fixed) to distances r from ``--r-min`` to ``--r-max`` nm, and the model's
energy is taken in OpenMM, split into the network (TorchForce) and the repulsive wall
(CustomNonbondedForce). Curves are relative to r = ``--r-ref`` (default 0.40 nm, the AA first
peak of Cho-Cl) and averaged over the frames; the AA contact distance (where the dataset's
g(r) first exceeds 0.01, as the wall's taper is placed) is marked. A total energy that falls,
rather than rises, below the AA contact distance is a trap: beads that reach it stay (a spike in
g(r)).
Per model and frame, the trap depth: the lowest total energy at r < AA contact - ``--margin``
minus the lowest in the AA's own contact well (AA contact <= r <= r_ref), in kT at
``--temperature``; negative: the excluded region binds more strongly than the AA contact does.
Writes ``scan.json`` (mean curves, kJ/mol; trap depths and where) and ``scan.png`` in ``--out``.
Units: nm, kJ/mol, K.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
KB = 0.008314462618  # kJ/mol/K


def aa_contact_nm(ds, a: int, b: int, frames=None, threshold: float = 0.01) -> float:
    """The AA contact distance (nm) of types a-b: where the dataset's g(r) first exceeds
    ``threshold``, as the wall's taper is placed (training.wall_fit); ``frames`` default: up to
    200 evenly spaced."""
    from openmm_cgkd.training.wall_fit import contact_distance_nm, pair_rdfs

    if frames is None:
        frames = np.linspace(0, ds.n_frames - 1, min(200, ds.n_frames)).round().astype(int)
    r, rdfs = pair_rdfs(ds, frames)
    contact = contact_distance_nm(r, rdfs[(min(a, b), max(a, b))], threshold)
    if contact is None:
        raise SystemExit(f"the dataset's g(r) of {ds.type_names[a]}-{ds.type_names[b]} never exceeds {threshold}")
    return contact


def pulled(ds, frames, a: int, b: int, radii):
    """For each frame of ``frames``: (the a-bead, the b-bead nearest to it, positions [r, N, 3] nm)
    with that b-bead moved along their line to each distance r of ``radii`` (nm), all else fixed."""
    ia, ib = np.flatnonzero(ds.bead_types == a), np.flatnonzero(ds.bead_types == b)
    for f in frames:
        pos, box = ds.positions[f].astype(np.float64), np.diag(ds.boxes[f]).astype(np.float64)
        v = pos[ib][None] - pos[ia][:, None]
        v -= box * np.round(v / box)  # minimum image (the DES box is rectangular)
        r = np.linalg.norm(v, axis=-1)
        i, j = np.unravel_index(np.argmin(r), r.shape)
        moved = np.repeat(pos[None], len(radii), axis=0)
        moved[:, ib[j]] = pos[ia[i]] + np.outer(radii, v[i, j] / r[i, j])
        yield int(ia[i]), int(ib[j]), moved


def scan(bundle, ds, frames, a: int, b: int, radii, threads: int = 1) -> dict:
    """Network and wall energies (kJ/mol) [frame, r] of ``bundle`` (:func:`pulled`), in OpenMM."""
    import openmm

    from openmm_cgkd.serving import CGKDForceField
    from openmm_cgkd.topology import bead_topology

    ff = CGKDForceField(bundle)
    names = [ds.type_names[t] for t in ds.bead_types]
    system = ff.create_system(bead_topology(names, ds.boxes[frames[0]]), ds.boxes[frames[0]])
    for force in system.getForces():  # group 1: the wall; group 0: the network
        force.setForceGroup(1 if isinstance(force, openmm.CustomNonbondedForce) else 0)
    platform = openmm.Platform.getPlatformByName("CPU")
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), platform, {"Threads": str(threads)})
    net, wall = np.zeros((len(frames), len(radii))), np.zeros((len(frames), len(radii)))
    for k, (f, (_, _, moved)) in enumerate(zip(frames, pulled(ds, frames, a, b, radii))):
        context.setPeriodicBoxVectors(*[openmm.Vec3(*row) for row in ds.boxes[f]])
        for m, pos in enumerate(moved):
            context.setPositions(pos)
            net[k, m] = context.getState(getEnergy=True, groups={0}).getPotentialEnergy()._value
            wall[k, m] = context.getState(getEnergy=True, groups={1}).getPotentialEnergy()._value
    return {"network": net, "wall": wall}


def plot(result: dict, path: Path) -> Path:
    """The figure of a scan (``scan.json``'s content): mean network and total energy against r, and
    the trap depth of every frame per model."""
    from openmm_cgkd.figures import colormap, new_figure

    kt = KB * result["temperature_K"]
    r, contact, pair = np.asarray(result["r_nm"]), result["aa_contact_nm"], result["pair"]
    fig = new_figure(figsize=(15, 4.2))
    axes = fig.subplots(1, 3)
    colours = colormap("tab20")
    for k, (name, m) in enumerate(result["models"].items()):
        for ax, key in zip(axes[:2], ("network", "total")):
            ax.plot(r, np.asarray(m[key]) / kt, label=name, color=colours(k % 20))
        if m["trap_kT"] is not None:
            axes[2].plot([k] * len(m["trap_kT"]), m["trap_kT"], "o", color=colours(k % 20), alpha=0.7)
            axes[2].plot([k - 0.3, k + 0.3], [np.median(m["trap_kT"])] * 2, color="k", lw=1.5)
    for ax, key, lim in zip(axes[:2], ("network", "total"), ((-30, 30), (-8, 15))):
        ax.axvline(contact, color="k", ls=":", lw=1)
        ax.axvline(contact - result["margin_nm"], color="grey", ls=":", lw=1)
        ax.set(xlabel=f"{pair[0]}-{pair[1]} distance r (nm)", ylabel=f"{key} energy (kT)", ylim=lim,
               title=f"{key}, mean over {len(result['frames'])} frames (0 at r = {result['r_ref_nm']:.2f} nm)")
    axes[1].legend(fontsize=6)
    axes[2].axhline(0.0, color="k", lw=0.8)
    axes[2].set_xticks(range(len(result["models"])), list(result["models"]), rotation=60, ha="right", fontsize=7)
    axes[2].set(ylabel=f"min below {contact - result['margin_nm']:.2f} nm - min of the contact well (kT)",
                title="trap depth per frame (bar: median; < 0: a trap)")
    fig.suptitle(f"Pulling the nearest {pair[1]} onto a {pair[0]} (dotted: the AA contact distance and the "
                 "excluded region's edge)", y=1.03)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundles", nargs="*", type=Path, help="model bundle directories")
    p.add_argument("--pair", nargs=2, default=["Cho", "Cl"], metavar=("A", "B"), help="bead type names")
    p.add_argument("--dataset", type=Path, default=HERE / "study" / "data" / "cg.h5")
    p.add_argument("--frames", type=int, default=5, help="frames, evenly spaced over the dataset")
    p.add_argument("--r-min", type=float, default=0.26)
    p.add_argument("--r-max", type=float, default=0.50)
    p.add_argument("--r-step", type=float, default=0.005)
    p.add_argument("--r-ref", type=float, default=0.40, help="energies relative to this distance (nm)")
    p.add_argument("--margin", type=float, default=0.02,
                   help="the excluded region is r < AA contact - margin (nm)")
    p.add_argument("--temperature", type=float, default=298.1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=HERE / "contact_scan")
    p.add_argument("--plot-only", action="store_true", help="draw scan.png again from OUT/scan.json")
    args = p.parse_args(argv)
    if not args.plot_only and not args.bundles:
        p.error("give the bundles to scan (or --plot-only)")
    if args.plot_only:
        plot(json.loads((args.out / "scan.json").read_text()), args.out / "scan.png")
        return 0

    import torch

    from openmm_cgkd.data.dataset import CGDataset
    from openmm_cgkd.fileio import relative_path

    torch.set_num_threads(args.threads)
    ds = CGDataset.load(args.dataset)
    a, b = (ds.type_names.index(n) for n in args.pair)
    frames = np.linspace(0, ds.n_frames - 1, args.frames).round().astype(int).tolist()
    radii = np.round(np.arange(args.r_min, args.r_max + 1e-9, args.r_step), 6)
    ref = int(np.argmin(np.abs(radii - args.r_ref)))
    contact = aa_contact_nm(ds, a, b)
    kt = KB * args.temperature
    out = {"pair": args.pair, "dataset": relative_path(args.dataset, args.out), "frames": frames,
           "r_nm": radii.tolist(), "r_ref_nm": float(radii[ref]), "aa_contact_nm": contact,
           "margin_nm": args.margin, "temperature_K": args.temperature, "models": {}}
    inside = radii < contact - args.margin  # where the AA liquid has no such pair
    well = (radii >= contact) & (radii <= radii[ref])  # the AA's own contact
    for bundle in args.bundles:
        e = scan(bundle, ds, frames, a, b, radii, args.threads)
        e["total"] = e["network"] + e["wall"]
        curves = {k: (v - v[:, ref:ref + 1]).mean(0) for k, v in e.items()}
        # per frame: the deepest total energy inside the excluded region minus the contact well's
        trap = (e["total"][:, inside].min(1) - e["total"][:, well].min(1)) / kt if inside.any() else None
        name = bundle.parent.name if bundle.name == "bundle" else bundle.name
        out["models"][name] = {"bundle": relative_path(bundle, args.out), **{k: v.tolist() for k, v in curves.items()},
                               "trap_kT": None if trap is None else trap.round(2).tolist(),
                               "trap_r_nm": None if trap is None else
                               radii[inside][e["total"][:, inside].argmin(1)].round(4).tolist()}
        if trap is not None:
            print(f"{name}: below {contact - args.margin:.3f} nm the total energy comes within "
                  f"{np.median(trap):+.1f} kT (median; frames {', '.join(f'{t:+.1f}' for t in trap)}) of the "
                  f"contact well; deeper than the well in {int((trap < 0).sum())} of {len(trap)} frames", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    plot(out, args.out / "scan.png")
    (args.out / "scan.json").write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
