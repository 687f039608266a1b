"""Background threads named for the OS too, so `top -H`, `ps -L` and /proc show which is which
(Python 3.11 names a thread for itself only; the kernel keeps 15 bytes of a name)."""

from __future__ import annotations

import contextlib
import threading


def name_os_thread(name: str) -> None:
    """Give the calling thread `name` in /proc/self/task/<tid>/comm (Linux; elsewhere nothing)."""
    with contextlib.suppress(OSError), open(f"/proc/self/task/{threading.get_native_id()}/comm", "w") as f:
        f.write(name[:15])
