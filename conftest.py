"""pytest anywhere in this repository (``make test``, or ``pytest --nbval notebooks`` from a plain shell) takes the
course's pinned numeric path: torch, MKL and oneDNN on their AVX2 code, as the ``Makefile`` sets for every target.

The lessons' committed outputs were made on that path, so nbval compares like with like on any x86-64 CPU; on an
AVX-512 machine's own path five cells of lessons 4, 6 and 9 print other last digits. The variables are set before
torch loads (this file is read first) and nbval's kernels inherit them; a value already exported is left alone.
"""

import os

PINNED = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
for _name, _value in PINNED.items():
    os.environ.setdefault(_name, _value)


def pytest_report_header(config):
    import torch

    line = f"torch CPU capability {torch.backends.cpu.get_cpu_capability()}; " + ", ".join(
        f"{k}={os.environ.get(k)}" for k in PINNED)
    if any(os.environ.get(k) != v for k, v in PINNED.items()):
        line += " (not the pinned numeric path: nbval may see other last digits)"
    return line
