"""The same weights make the same artifact files in any process: the crash test compares
published versions by checksum, and a resumed nightly must publish what an uninterrupted one
would. Each side saves in its own interpreter with its own hash seed (Python sets and Rust
hash maps iterate in a per-process order)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

TWO_TOWER = """
import sys, torch
from models.retrieval.two_tower import two_tower
from tests.test_two_tower import TINY
torch.manual_seed(0)
two_tower(20, TINY, torch.randint(0, 4, (21, 3))).save(sys.argv[1])
"""

TEACHER = """
import sys, torch
from models.relevance.teacher import CrossEncoderTeacher
from models.relevance.teacher_settings import TeacherSettings
torch.manual_seed(0)
CrossEncoderTeacher.build(TeacherSettings(backbone_path=sys.argv[2], head_hidden=8, lora_r=4)).save(sys.argv[1])
"""


def saved_in_two_processes(script: str, tmp_path: Path, *args: str) -> list[dict[str, bytes]]:
    out = []
    for seed in ("1", "2"):
        folder = tmp_path / f"hash{seed}"
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(REPO)}
        subprocess.run([sys.executable, "-c", script, str(folder), *args], cwd=REPO, env=env, check=True)
        out.append({str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()})
    return out


def test_a_two_tower_saves_to_the_same_bytes_in_any_process(tmp_path):
    first, second = saved_in_two_processes(TWO_TOWER, tmp_path)
    assert first.keys() == second.keys() and first == second


@pytest.mark.slow  # two interpreters loading transformers + peft; the whole-nightly crash test also covers it
def test_a_lora_teacher_saves_to_the_same_bytes_in_any_process(tmp_path):
    from models.random_models import save_random_backbone

    backbone = save_random_backbone(tmp_path / "bert", "bert")
    first, second = saved_in_two_processes(TEACHER, tmp_path, str(backbone))
    assert "adapter/adapter_config.json" in first
    assert [name for name in first if first[name] != second.get(name)] == []
