"""AA data: force field, box building, AA simulation, external inputs, mapping, CG datasets."""
