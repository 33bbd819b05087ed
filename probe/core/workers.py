"""What every worker process of ours does: end itself when the process that started
it is gone. A pool's workers otherwise wait for work forever after `kill -9` of the
command (an import, an analysis), each holding memory and, at worst, a core."""

from __future__ import annotations

import os
import threading
import time


def exit_with_parent(parent: int) -> None:
    """Watch, in a daemon thread, that ``parent`` is still this process's parent; when
    it is not (it died and we were re-parented), exit at once."""
    threading.Thread(target=_watch, args=(parent,), daemon=True, name="parent-watch").start()


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)
