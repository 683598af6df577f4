"""The pipeline: every stage chained and cached by fingerprint, resumable (``cgkd pipeline``).

Modules: ``pipeline`` (config, stage cache, stage drivers, run), ``results`` (what each stage
returns), ``report`` (report.md and figures), ``status`` (where a run stands), ``sweep`` (a grid of
model settings).
"""
