"""Every worker child keeps freed image-sized blocks in its heap (common.allocator): without it, glibc
returns each block above 128 KiB to the kernel and the next decode page-faults it in again."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Image-sized temporaries of growing sizes, as describe makes them; prints the page faults they cost.
_WORKLOAD = """
import resource, sys
import numpy as np
# numpy asks for huge pages on large arrays where the kernel grants them, which makes the count of
# faults depend on the host; plain 4 KB pages make it the allocator's alone
getattr(np._core.multiarray, "_set_madvise_hugepage", lambda _: None)(False)
if sys.argv[1] == "worker-child":
    from workers.process_init import _one_thread_per_process
    _one_thread_per_process()  # what every prefork child runs (celery's worker_process_init)
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    for mib in range(1, 12):
        np.ones(mib << 17)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
"""


def _faults(mode: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", _WORKLOAD, mode], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt tuning is glibc's")
def test_worker_children_reuse_freed_image_buffers() -> None:
    plain, tuned = _faults("plain"), _faults("worker-child")
    assert plain > 4000  # the workload does fault without the tuning (the test would mean nothing)
    assert tuned < plain / 2, (plain, tuned)
