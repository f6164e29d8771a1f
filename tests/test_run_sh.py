"""Every command in run.sh is a valid train.py invocation (config files exist, overrides
name real keys with valid values); nothing is trained."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from configs.loader import parse_cli
from conftest import ROOT

SECTIONS = {"paper": 3, "authors_code": 3, "ablation": 10, "sweeps": 16, "finetune": 6}


@pytest.mark.parametrize("section, count", SECTIONS.items())
def test_run_sh_commands_parse_and_validate(section, count, tmp_path):
    record = tmp_path / "calls.jsonl"
    recorder = tmp_path / "python"  # stands in for $PYTHON: writes its arguments, runs nothing
    recorder.write_text(f"#!{sys.executable}\nimport json, sys\n"
                        f"open({str(record)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n")
    recorder.chmod(0o755)
    result = subprocess.run(["bash", "run.sh", section], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHON": str(recorder)})
    assert result.returncode == 0, result.stderr
    calls = [json.loads(line) for line in record.read_text().splitlines()]
    assert len(calls) == count
    names = set()
    for argv in calls:
        assert argv[0] == "train.py"
        cfg = parse_cli(argv[1:])  # loads the YAML, applies the overrides, validates
        names.add((cfg.data.dataset, cfg.train.name))
    assert len(names) == count, "two runs of one section share a dataset and name"
