"""Whether the process that left something behind (a lock, a staging folder) still runs.

Only a process on this host can be checked; callers decide what "elsewhere" means (a lease
that expires, or leaving the thing alone).
"""

from __future__ import annotations

import os
import socket


def this_host() -> str:
    return socket.gethostname()


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` exists on this host (someone else's process counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, someone else's
        return True
    return True


def gone(host: str, pid: int) -> bool:
    """True only when the process is known to have ended: on this host and no longer there."""
    return host == this_host() and not pid_alive(pid)
