"""One writer of the concurrency tests, run as its own process (its own JVM):

    python -m tests.concurrent_writer LAKE SOURCE TAG ROWS WRITES GO_FILE [same]

waits for GO_FILE, then replaces the ``boards`` slice ``source = SOURCE`` WRITES times, each with
ROWS rows named ``TAG-<write>-<k>`` (with ``same``: ``TAG-<k>``, the same rows every time), and
prints ``done retries=N same=M`` (M: writes another run had made with the same rows first);
exits 3 printing the message on a :class:`runtime.lake.SliceConflict`, 4 when a write reports a
count other than ROWS.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from runtime.lake import Lake, SliceConflict
from runtime.session import build_session
from tests.conftest import TEST_SPARK

BOARDS = "board_id string, source string, title string, owner_user_id string, created_at timestamp"


class Retries(logging.Handler):
    count = 0
    same = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "writing again" in record.getMessage():
            Retries.count += 1
        if "another run wrote the same" in record.getMessage():
            Retries.same += 1


def main(root: str, source: str, tag: str, rows: int, writes: int, go: str, same: bool = False) -> int:
    logging.getLogger("runtime.lake").addHandler(Retries())
    logging.getLogger("runtime.lake").setLevel(logging.INFO)
    spark = build_session(f"writer-{tag}", TEST_SPARK, quiet=True)
    lake = Lake.at(root)
    frames = [
        spark.createDataFrame(
            [(f"{tag}-{k}" if same else f"{tag}-{i}-{k}", source, tag, None, None) for k in range(rows)], BOARDS
        )
        for i in range(writes)
    ]
    while not Path(go).exists():
        time.sleep(0.05)
    try:
        for frame in frames:
            written = lake.replace_slice(frame, "boards", f"source = '{source}'")
            if written != rows:
                print(f"wrong count: wrote {rows} rows, reported {written}")
                return 4
    except SliceConflict as err:
        print(f"conflict: {err}")
        return 3
    finally:
        spark.stop()
    print(f"done retries={Retries.count} same={Retries.same}")
    return 0


if __name__ == "__main__":
    a = sys.argv[1:]
    sys.exit(main(a[0], a[1], a[2], int(a[3]), int(a[4]), a[5], a[6:] == ["same"]))
