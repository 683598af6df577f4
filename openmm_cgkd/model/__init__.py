"""CG potentials: torchmd-net representation + per-bead energy head, repulsive wall, ensembles."""
