"""Measured step-time constants of the local vLLM CPU engine serving the tiny model. Pure data.

`profile.cpu_tiny_llama()` turns them into the `cpu-calibrated` profile: a step of a batch with
T tokens, S sequences and P attention pairs takes

    PER_STEP_S + PER_TOKEN_S x T + PER_SEQ_S x S + PER_ATTENTION_PAIR_S x P  seconds.

They are a non-negative least-squares fit of that line to a real engine's busy time over a grid
of batch shapes (prefill of 64-2000 tokens; decode at batch 1-128 over short and 1000-token
contexts; a mixed prefill and decode load). `benchmarks/cpu_calibrate.py` measures them, prints
this block, and keeps the raw numbers in `benchmarks/results/cpu_calibrate.json`: the fit is
within 3-17% of each experiment (relative RMS 10%). The machine is shared and small, so
re-measure before trusting them elsewhere.
"""

MEASURED_ON = "2026-11-22"
MACHINE = "x86_64, 2 cores (the project's dev VM), vLLM CPU 0.32.0, OMP_NUM_THREADS=1"
COMMAND = ".venv/bin/python benchmarks/cpu_calibrate.py"

PER_STEP_S = 0.002206
PER_TOKEN_S = 2.456e-05
PER_SEQ_S = 9.424e-05
PER_ATTENTION_PAIR_S = 2.189e-08
