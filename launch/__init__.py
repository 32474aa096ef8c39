"""Launchers: one pretraining or fine-tuning command on a TPU pod slice, a SLURM GPU
cluster, or N local processes (launch/tpu_pod.py, launch/slurm.py, launch/local.py).

Each takes its own flags, then `--`, then the arguments of `python -m bert_jax.main`,
and prints every command it would run with `--dry-run`.
"""
