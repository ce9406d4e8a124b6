"""The embedded demo: the whole nightly (``jobs.nightly``) for one date on the embedded default
(``conf/local.yaml``) at the small sizes of ``conf/demo.yaml`` — simulated traffic for the day,
the real CrowdFlower labels, S3-Rec sequences and COCO images under ``ingest.data_root`` — into
one local Delta lake; it ends with the path of the run's HTML report.

    pinpipe demo                                  # lake under ./lake, date nightly.date of demo.yaml
    pinpipe demo --date 2026-11-02                # the next night: incremental, resumable
    pinpipe demo --set lake.root=/tmp/lake --set captioner.model_path=/models/blip-image-captioning-base

Options are the nightly's; the demo sizes come first, so any ``--conf-file`` or ``--set`` wins.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources

from jobs import nightly
from jobs.config import run_job
from runtime.entry import with_date_option

DEMO_CONF = resources.files("conf") / "demo.yaml"


def main(argv: Sequence[str] | None = None) -> nightly.NightlyReport:
    args = ["--conf-file", str(DEMO_CONF), *with_date_option("pinpipe demo", argv)]
    return run_job("pinpipe demo", __doc__, nightly.run, args)


if __name__ == "__main__":
    main()
