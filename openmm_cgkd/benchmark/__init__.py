"""Benchmarks behind ``cgkd benchmark``: ``md`` (ms/step and ns/day per model and serving
backend) and ``training`` (training throughput of stacked vs one-by-one members)."""
