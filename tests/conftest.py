import os

# Keep test processes from oversubscribing small CI machines.
os.environ.setdefault("OMP_NUM_THREADS", "2")
