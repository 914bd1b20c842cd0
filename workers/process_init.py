"""Set-up of each prefork child: one busy thread per process, an allocator that keeps image buffers.

The pool already runs one process per core; OpenCV's own thread pool on top of that only makes the
processes' threads compete for the same cores (measured in one process, 800x1000 JPEGs: 14.1 -> 12.6
ms CPU per describe with OpenCV held to one thread). Ingest and query children alike describe images,
so both keep freed image-sized blocks in the heap (common.allocator)."""

from __future__ import annotations

from celery.signals import worker_process_init

from common import allocator


@worker_process_init.connect
def _one_thread_per_process(**_: object) -> None:
    import cv2

    cv2.setNumThreads(1)
    allocator.tune_once()
