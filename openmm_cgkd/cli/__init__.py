"""The ``cgkd`` command line: one module per pipeline stage, registered in :mod:`.main`."""
