"""The network force: the ONE place that chooses how OpenMM evaluates a CG network.

Two backends, chosen by :func:`make_network_force`'s ``backend``:

* ``"torchforce"`` (the default): openmm-torch's ``TorchForce`` (C++, runs a TorchScript module
  inside the Context, positions and box passed every step, no Python per step);
* ``"python"``: OpenMM's own ``openmm.PythonForce`` (OpenMM >= 8.4) calling the eager (not
  scripted) module from Python every step (:class:`PythonForceComputation`), optionally through
  ``torch.compile``. TorchScript is deprecated in PyTorch and openmm-torch's ``TorchForce`` with
  it; this backend needs neither (a bundle's ``state_dict.pt`` rebuilds the eager module). The
  price is a Python call, and on GPU platforms a host round trip of positions and forces, per step.

The module given to ``TorchForce`` is :class:`TorchForceModule`: it holds the bead type indices
of the system (a buffer), wraps positions into the periodic box in the precision OpenMM hands
over (float64 on CPU/Reference; wrapping first keeps float32 accurate however far beads have
diffused), casts them to the network's dtype (float32) and returns the energy and the forces
the network computes (``setOutputsForces(True)``). openmm-torch runs a ``torch.jit.freeze``'d
copy of this module (freezing drops ``detach()`` calls: the network code must not rely on them).

The network uses torchmd-net's custom operators (neighbour lists). They must be registered in
the process before a ``TorchForce`` is built or a serialized ``System`` holding one is
deserialized: ``import torchmdnet`` first (:func:`make_network_force` and ``CGKDForceField`` do it
for you; a script that only deserializes a System XML must do it itself).
"""
from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Optional, Tuple

import torch

__all__ = ["TorchForceModule", "PythonForceComputation", "make_network_force", "served_model", "NETWORK_FORCE_NAME",
           "BACKENDS", "DEFAULT_BACKEND", "check_backend"]

NETWORK_FORCE_NAME = "cgkd_network"
BACKENDS = ("torchforce", "python")
DEFAULT_BACKEND = "torchforce"


def check_backend(backend: str) -> str:
    """``backend`` if it names a serving backend, else ``ValueError`` listing them."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown network-force backend {backend!r}; choose one of {list(BACKENDS)}")
    return backend


def _network_dtype(model: torch.nn.Module) -> torch.dtype:
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


class TorchForceModule(torch.nn.Module):
    """``forward(positions [N,3] nm, boxvectors [3,3] nm) -> (energy kJ/mol, forces [N,3] kJ/mol/nm)``.

    ``model`` has the CG potential signature ``model(bead_types, positions, box) ->
    (energy, bead_energies, forces[, force_std])`` and excludes the wall. For a non-periodic system
    (``periodic=False``) the model receives ``box=None``. With ``particles`` (system particle
    indices, one per entry of ``bead_types``) the model sees only those particles and the other
    rows of the returned forces are zero (openmm-torch has no particle subset of its own).
    """

    def __init__(self, model: torch.nn.Module, bead_types: Sequence[int], periodic: bool = True,
                 dtype: torch.dtype | None = None, particles: Sequence[int] | None = None):
        super().__init__()
        self.model = model
        self.register_buffer("bead_types", torch.as_tensor(list(bead_types), dtype=torch.long))
        self.subset = particles is not None
        self.register_buffer("particles", torch.as_tensor(list(particles or []), dtype=torch.long))
        if self.subset and self.particles.numel() != self.bead_types.numel():
            raise ValueError(f"{self.particles.numel()} particle indices for {self.bead_types.numel()} bead types")
        self.periodic = bool(periodic)
        self.dtype = dtype if dtype is not None else _network_dtype(model)

    def forward(self, positions: torch.Tensor, boxvectors: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        box: Optional[torch.Tensor] = None
        pos = positions
        if self.subset:
            pos = positions.index_select(0, self.particles)
        if self.periodic:
            if boxvectors is None:
                raise RuntimeError("cgkd: periodic network force called without box vectors")
            b = boxvectors.to(positions.dtype)
            # Wrap into the reduced (OpenMM) triclinic box, c then b then a, in the input precision.
            pos = pos - torch.outer(torch.floor(pos[:, 2] / b[2, 2]), b[2])
            pos = pos - torch.outer(torch.floor(pos[:, 1] / b[1, 1]), b[1])
            pos = pos - torch.outer(torch.floor(pos[:, 0] / b[0, 0]), b[0])
            box = b.to(self.dtype)
        out = self.model(self.bead_types, pos.to(self.dtype), box)  # an ensemble adds force_std
        forces = out[2]
        if self.subset:
            forces = torch.zeros((positions.shape[0], 3), dtype=forces.dtype,
                                 device=forces.device).index_copy(0, self.particles, forces)
        return out[0], forces


class PythonForceComputation:
    """What an ``openmm.PythonForce`` calls each step: ``(State) -> (energy kJ/mol, forces
    [N,3] kJ/mol/nm as a float64 numpy array)``, evaluating a :class:`TorchForceModule` (eager) on
    ``device`` from the State's positions and box (nm, float64).

    ``compile=True`` runs the module through ``torch.compile`` (compiled on the first call;
    needs an eager module and, on CPU, a C++ compiler). Picklable (OpenMM pickles the function
    when a System is serialized): the compiled copy is rebuilt after unpickling.
    """

    def __init__(self, module: TorchForceModule, device: str | torch.device = "cpu", compile: bool = False):
        self.device = torch.device(device)
        self.module = module.to(self.device).eval()
        self.compile = bool(compile)
        self._run = None

    def _runner(self):
        if self._run is None:
            self._run = torch.compile(self.module) if self.compile else self.module
        return self._run

    def __call__(self, state):
        import numpy as np
        from openmm import unit

        pos = np.asarray(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer), dtype=np.float64)
        positions = torch.from_numpy(pos).to(self.device)
        box = None
        if self.module.periodic:
            vecs = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer)
            box = torch.from_numpy(np.asarray(vecs, dtype=np.float64)).to(self.device)
        energy, forces = self._runner()(positions, box)
        return float(energy), forces.detach().to("cpu", torch.float64).numpy()

    def __getstate__(self):
        return {"module": copy.deepcopy(self.module).to("cpu"), "device": str(self.device), "compile": self.compile}

    def __setstate__(self, state):
        self.__init__(state["module"], state["device"], state["compile"])


def served_model(model: torch.nn.Module) -> torch.nn.Module:
    """The network as MD serves it: a stacked ensemble (``serve_mean_only``) as a copy that computes
    the member-mean force only (one backward pass, no std, no host syncs; ``create_system`` has
    checked the inputs that cannot change); any other model as given."""
    if hasattr(model, "serve_mean_only"):
        model = copy.deepcopy(model)
        model.serve_mean_only()
    return model


def make_network_force(model: torch.nn.Module, bead_types: Sequence[int], *, periodic: bool = True,
                       properties: Mapping[str, str] | None = None, force_group: int = 0,
                       backend: str = DEFAULT_BACKEND, particles: Sequence[int] | None = None,
                       device: str | None = None, compile: bool = False):
    """An OpenMM ``Force`` evaluating ``model`` (the network, no wall) on beads of ``bead_types``.

    ``backend``: ``"torchforce"`` (openmm-torch ``TorchForce``, the model is scripted) or
    ``"python"`` (``openmm.PythonForce`` calling the model as given, best an eager module; see
    the module docstring). ``properties`` go to openmm-torch (e.g. ``{"useCUDAGraphs": "true"}``;
    torchforce only). ``particles``: the system particle indices the beads of ``bead_types``
    are (default: particles 0..N-1, the whole system). ``device`` (python only): where torch
    runs, default CUDA when torch sees a GPU, else CPU. ``compile`` (python only):
    ``torch.compile`` the module. The force is named ``cgkd_network``, in group ``force_group``.
    """
    from openmm_cgkd.quiet import import_torchmdnet

    import_torchmdnet()  # registers the custom operators the network calls
    check_backend(backend)
    if particles is not None:
        particles = [int(i) for i in particles]
        if len(particles) != len(bead_types) or len(set(particles)) != len(particles) or min(particles, default=0) < 0:
            raise ValueError(f"particles must be {len(bead_types)} distinct non-negative system indices, one per "
                             f"bead type entry; got {len(particles)} ({len(set(particles))} distinct)")
    properties = {str(k): str(v) for k, v in (properties or {}).items()}
    model = served_model(model)
    if backend == "python":
        return _make_python_force(model, bead_types, periodic=periodic, properties=properties,
                                  force_group=force_group, particles=particles, device=device, compile=compile)
    if compile or device is not None:
        raise ValueError("compile and device are options of the python backend; TorchForce runs a TorchScript "
                         "module on the Context's own device")
    from openmm_cgkd.quiet import import_torchforce

    TorchForce = import_torchforce()

    if properties.get("useCUDAGraphs", "false").lower() == "true" and hasattr(model, "set_check_errors"):
        # a captured CUDA graph cannot read values back to the host: the model's clear-error checks
        # (which do) give way to asynchronous device asserts, on a copy of the caller's module
        model = copy.deepcopy(model)
        model.set_check_errors(False)
    wrapper = TorchForceModule(model, bead_types, periodic=periodic, particles=particles)
    scripted = torch.jit.script(wrapper)
    force = TorchForce(scripted, properties)
    force.setUsesPeriodicBoundaryConditions(bool(periodic))
    force.setOutputsForces(True)
    force.setName(NETWORK_FORCE_NAME)
    force.setForceGroup(int(force_group))
    return force


def _make_python_force(model, bead_types, *, periodic, properties, force_group, particles, device, compile):
    import openmm

    if properties:
        raise ValueError(f"network properties {sorted(properties)} are openmm-torch (torchforce backend) options; "
                         "the python backend has none (use compile=True for a compiled model)")
    if compile and isinstance(model, torch.jit.ScriptModule):
        raise ValueError("torch.compile needs the eager model, not a TorchScript module (Bundle.eager_model())")
    if not hasattr(openmm, "PythonForce"):
        raise RuntimeError(f"OpenMM {openmm.__version__} has no PythonForce (needs OpenMM >= 8.4)")
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    # the PythonForce hands over only the particles set below: the module sees them as the whole system
    computation = PythonForceComputation(TorchForceModule(model, bead_types, periodic=periodic), device=device,
                                         compile=compile)
    force = openmm.PythonForce(computation)
    if particles is not None:
        force.setParticles(particles)
    force.setUsesPeriodicBoundaryConditions(bool(periodic))
    force.setName(NETWORK_FORCE_NAME)
    force.setForceGroup(int(force_group))
    return force
