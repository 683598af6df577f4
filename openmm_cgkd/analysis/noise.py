"""The sampling-noise floor of model TAEs: the AA reference scored against itself.

A model replica is scored on a finite number of frames, so even a perfect model has a TAE above
zero. :func:`noise_floor` measures that floor with the reference's own frames: the reference is
cut into two contiguous halves, each half into blocks as long as the part of a model replica that
is scored, in time (``block_ps``: the number of reference frames is ``block_ps`` over the
reference's frame spacing, as CG and AA frames are rarely saved at the same interval; or
``block_frames`` frames directly), and every block is analysed against the OTHER half as if it
were a replica (same grids and settings as the models). The TAEs of the blocks, mean and standard
deviation over blocks, are what sampling noise alone gives. A model TAE within about this floor
cannot be told from the reference. (The floor is slightly conservative: a model is scored
against the whole reference, the blocks against half of it.)
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from openmm_cgkd.analysis.distributions import AnalysisError
from openmm_cgkd.analysis.replicas import ReplicaStat

__all__ = ["NoiseFloor", "noise_floor", "reference_blocks"]


@dataclass(frozen=True)
class NoiseFloor:
    """TAE of reference blocks against the other half of the reference: ``summary`` per kind
    (``rdf``, ``adf``, ``adf@<cutoff>``, ``cdf``), mean and std over ``n_blocks`` blocks of
    ``block_frames`` frames each."""

    block_frames: int
    n_blocks: int
    reference_frames: int
    summary: dict[str, ReplicaStat]
    block_ps: float | None = None  # the blocks' length in time, when they were sized in ps

    def to_dict(self) -> dict:
        d = {"block_frames": self.block_frames, "n_blocks": self.n_blocks,
             "reference_frames": self.reference_frames,
             "summary": {k: v.to_dict() for k, v in self.summary.items()}}
        if self.block_ps is not None:  # floors sized in frames keep their bytes
            d["block_ps"] = self.block_ps
        return d

    @classmethod
    def from_dict(cls, data: Mapping) -> "NoiseFloor":
        return cls(int(data["block_frames"]), int(data["n_blocks"]), int(data["reference_frames"]),
                   {k: ReplicaStat(float(v["mean"]), float(v["std"]), list(v["values"]))
                    for k, v in data["summary"].items()},
                   None if data.get("block_ps") is None else float(data["block_ps"]))


def reference_blocks(ref, block_ps: float) -> int:
    """Frames of the (loaded) reference trajectory ``ref`` spanning ``block_ps`` ps: ``block_ps``
    over its median frame spacing (at least 1)."""
    import numpy as np

    t = np.asarray(ref.time, dtype=np.float64)
    dt = np.diff(t)
    if len(t) < 2 or not np.all(dt > 0):
        raise AnalysisError("the reference's frame times are not increasing: give the noise-floor blocks in frames")
    return max(1, int(round(float(block_ps) / float(np.median(dt)))))


def noise_floor(reference, block_frames: int | None = None, settings=None, progress: bool = False, *,
                block_ps: float | None = None) -> NoiseFloor:
    """The TAE of blocks of ``reference`` (trajectory, CGDataset or file; loaded with
    ``settings.reference_stride`` / ``reference_max_frames``) against the other half of it; the
    blocks span ``block_ps`` ps of the reference (its own frame times) or ``block_frames`` frames
    (give one). ``settings``: the :class:`~openmm_cgkd.analysis.report.AnalysisSettings` of the
    models (its discard does not apply: the reference is equilibrated). Needs at least one block
    per half."""
    from openmm_cgkd.analysis.report import AnalysisSettings, analyze_model, load_reference, summarize_taes

    s = settings or AnalysisSettings()
    if (block_frames is None) == (block_ps is None):
        raise AnalysisError("give the noise-floor block length in frames or in ps (one of them)")
    ref = load_reference(reference, stride=s.reference_stride, max_frames=s.reference_max_frames)
    s = s.with_adf_cutoffs(ref)
    if block_ps is not None:
        if not block_ps > 0:
            raise AnalysisError(f"block_ps must be > 0, got {block_ps}")
        block_frames = reference_blocks(ref, block_ps)
    block_frames = int(block_frames)
    if block_frames < 1:
        raise AnalysisError(f"block_frames must be >= 1, got {block_frames}")
    half = ref.n_frames // 2
    per_half = half // block_frames
    if per_half < 1:
        raise AnalysisError(f"the reference has {ref.n_frames} frames: a noise floor with blocks of "
                            f"{block_frames} frames needs at least {2 * block_frames}")
    # The blocks are cut from the loaded (strided) reference: no stride or discard of their own.
    s_blocks = replace(s, stride=1, discard_frames=0, reference_stride=1, reference_max_frames=None)
    halves = (ref[:half], ref[half:2 * half])
    tables = []
    for own, other in (halves, halves[::-1]):
        blocks = [own[b * block_frames:(b + 1) * block_frames] for b in range(per_half)]
        report = analyze_model(blocks, other, settings=s_blocks, name="reference blocks", progress=progress)
        tables += [r.tae for r in report.good_replicas]
    return NoiseFloor(block_frames, len(tables), 2 * half, summarize_taes(tables, s.adf_cutoffs),
                      None if block_ps is None else float(block_ps))
