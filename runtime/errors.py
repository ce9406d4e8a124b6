"""A failed run, said in one line: what went wrong, which key or file, what to do.

``explain(exc)`` turns what a job raised — pinpipe's own errors (their messages already name the
key or file), a Spark error (its first line), a Java exception from the JVM (its innermost
cause) — into one line, and adds the fix for the failures people meet most: a lake root that is
a file or cannot be written, a bad ``spark.master``, a JVM that would not start (often
``spark.driver_memory``). ``run_job`` prints it and exits 1; ``--verbose`` shows the trace.
"""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Iterator

MAX_CHARS = 600

# (pattern in the error text, what to do); the first match wins.
HINTS: list[tuple[re.Pattern[str], str]] = [
    (
        re.compile(r"Read-only file system|AccessDeniedException|Permission denied", re.I),
        "the lake (lake.root) or a path under it cannot be written: check its permissions or choose another root",
    ),
    (
        re.compile(r"ParentNotDirectoryException|Not a directory|is not a directory|FileAlreadyExistsException", re.I),
        "a path that must be a folder is a file: point lake.root (or the path named) at a folder",
    ),
    (
        re.compile(r"No space left on device|ENOSPC|DiskSpace|disk is full", re.I),
        "the disk is full: free space where the lake (lake.root) or the path named lives, then run again "
        "(nothing half-written is visible: a resumed run starts over what failed)",
    ),
    (
        re.compile(r"Could not parse Master URL", re.I),
        "spark.master must be local[N], local[*], spark://host:port, yarn or k8s://...",
    ),
    (
        re.compile(r"JAVA_GATEWAY_EXITED|Java gateway process exited|Could not create the Java Virtual Machine", re.I),
        "the Spark JVM did not start: check spark.driver_memory (e.g. 4g, within this machine's memory), "
        "spark.master, and that Java 17+ is installed (setup/setup.sh)",
    ),
]


def _java_root_cause(exc: BaseException) -> str | None:
    """``Class: message`` of the innermost cause of a Py4J Java exception, if ``exc`` is one."""
    java = getattr(exc, "java_exception", None)
    if java is None:
        return None
    try:
        seen = java
        while seen.getCause() is not None and seen.getCause() != seen:
            seen = seen.getCause()
        return str(seen.toString())
    except Exception:  # the JVM may be gone: fall back to the Python text
        return None


def _text(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # a Py4J error whose JVM is gone
        return ""


def _first_lines(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    kept = []
    for line in lines:
        if line.startswith(("at ", "JVM stacktrace", "Traceback", "File ")) or line.startswith("\tat "):
            break
        kept.append(line)
        if len(kept) == 3:
            break
    return " ".join(kept)


def explain(exc: BaseException) -> str:
    """One line for ``exc``: its message (for a Java error the innermost cause), and a hint when
    the failure is a common one."""
    text = _java_root_cause(exc) or _first_lines(_text(exc)) or type(exc).__name__
    name = type(exc).__name__
    if name not in ("Py4JJavaError", "CapturedException") and not text.startswith(name):
        text = f"{name}: {text}"
    if len(text) > MAX_CHARS:
        text = text[: MAX_CHARS - 3] + "..."
    haystack = f"{text} {_text(exc)}"
    for pattern, hint in HINTS:
        if pattern.search(haystack):
            return f"{text} -- {hint}"
    return text


@contextlib.contextmanager
def one_line_errors(prog: str) -> Iterator[None]:
    """For commands without a Spark session (``pinpipe index``, ``pinpipe rollback``): a failure
    is one line on stderr, ``explain``-ed, and exit status 1."""
    try:
        yield
    except Exception as exc:
        print(f"{prog}: error: {explain(exc)}", file=sys.stderr)
        raise SystemExit(1) from None
