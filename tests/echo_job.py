"""A job that exists only in a test's copy of the job table (tests/test_job_table.py): its
module, its settings class and its row are all it takes to be a command, a config section and a
nightly stage."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class EchoConfig:
    word: str = field(default="hello", metadata={"help": "What the job says."})


@dataclass(frozen=True)
class EchoReport:
    word: str

    def line(self) -> str:
        return f"echo: {self.word}"


def run(spark, cfg) -> EchoReport:
    return EchoReport(cfg.echo.word)


def main(argv=None) -> None:
    print(f"echo main {list(argv or [])}")
