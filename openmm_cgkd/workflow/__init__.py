"""The pipeline: every stage chained and cached by fingerprint, resumable (``cgkd pipeline``).

Modules: ``config`` (the pipeline's YAML configuration), ``cache`` (the stage markers),
``stages`` (one module per stage: data, teachers, labels, students, md, analysis), ``run``
(``run_pipeline``, ``interim_report``: the stages in order), ``results`` (what each stage
returns), ``report`` (report.md and figures), ``status`` (where a run stands), ``sweep`` (a grid
of model settings).
"""
