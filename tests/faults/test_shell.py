"""Nothing but ``slurm.setup`` reaches the generated sbatch script as shell: each field that is
written into it (ablation name → job name, partition, mem, sbatch_extra keys and values, the
output folder) is refused or quoted, for a newline, ``;`` and ``$(...)``. The script is run with
bash (``srun`` a stand-in) to show the text stayed text."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from langdml.ablation.backends import resolve_options
from langdml.cli import main
from langdml.errors import ConfigError, LangDMLError

pytest.importorskip("submitit")

INJECTIONS = ["x\ntouch {mark}", "x;touch {mark}", "$(touch {mark})"]


def _ablation(tmp_path: Path, backend: dict | None = None, name: str = "abl") -> Path:
    tree = {
        "name": name,
        "base": {"data": {"dataset": "imagefolder:nowhere"}},
        "grid": {"loss.regularizers": ["none"]},
        "seeds": [0],
        "backend": backend or {},
    }
    path = tmp_path / "ablation.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


@pytest.fixture
def fake_srun(tmp_path, monkeypatch):
    """A stand-in srun on PATH (submitit then believes it is on a cluster; nothing submits)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    return bin_dir


def _script(options, out: Path, job_name: str = "langdml-abl") -> str:
    from langdml.ablation.slurm_backend import SlurmBackend

    backend = SlurmBackend(options, out, job_name)
    return backend.executor(job_name)._executor._make_submission_file_text("true", "uid")


def _run_script(text: str, tmp_path: Path) -> None:
    script = tmp_path / "job.sh"
    script.write_text(text)
    subprocess.run(["bash", str(script)], cwd=tmp_path, capture_output=True, timeout=60)


FIELDS = {
    "partition": (lambda p: {"slurm": {"partition": p}}, "backend.slurm.partition"),
    "mem": (lambda p: {"slurm": {"mem": p}}, "backend.slurm.mem"),
    "sbatch_extra key": (
        lambda p: {"slurm": {"sbatch_extra": {p: "lab"}}},
        "is not an sbatch option name",
    ),
}


@pytest.mark.parametrize("payload", INJECTIONS)
@pytest.mark.parametrize("field", sorted(FIELDS))
def test_script_fields_refuse_shell(tmp_path, payload, field):
    section, words = FIELDS[field]
    text = section(payload.format(mark=tmp_path / "MARK"))
    with pytest.raises(ConfigError) as info:
        resolve_options("slurm", _ablation(tmp_path, text))
    assert words in str(info.value) and len(str(info.value).splitlines()) == 1


def test_sbatch_extra_value_with_a_newline_is_refused(tmp_path):
    section = {"slurm": {"sbatch_extra": {"account": "lab\ntouch MARK"}}}
    with pytest.raises(ConfigError) as info:
        resolve_options("slurm", _ablation(tmp_path, section))
    assert "--account='lab\\ntouch MARK' holds a newline" in str(info.value)


@pytest.mark.parametrize("payload", INJECTIONS[1:])
def test_sbatch_extra_values_are_quoted_and_stay_text(tmp_path, fake_srun, payload):
    mark, ran = tmp_path / "MARK", tmp_path / "SETUP_RAN"
    value = payload.format(mark=mark)
    section = {"slurm": {"sbatch_extra": {"account": value}, "setup": [f"touch {ran}"]}}
    options = resolve_options("slurm", _ablation(tmp_path, section))
    text = _script(options, tmp_path / "out")
    assert "#SBATCH --account='" in text
    _run_script(text, tmp_path)
    assert ran.exists(), "the script did not run (the positive control)"
    assert not mark.exists()


@pytest.mark.parametrize("payload", INJECTIONS)
def test_ablation_name_refuses_shell_and_paths(tmp_path, payload):
    from langdml.ablation import load_ablation

    name = payload.format(mark=tmp_path / "MARK")
    with pytest.raises(ConfigError) as info:
        load_ablation(_ablation(tmp_path, name=name))
    assert "name" in str(info.value) and "is refused" in str(info.value)


@pytest.mark.parametrize("name", ["../../x", "/abs/x", "a/b", ".hidden", "two words"])
def test_ablation_name_is_one_plain_word(tmp_path, name):
    from langdml.ablation import load_ablation

    with pytest.raises(ConfigError):
        load_ablation(_ablation(tmp_path, name=name))


def test_output_folder_with_a_newline_is_refused_and_shell_in_it_stays_text(tmp_path, fake_srun):
    options = resolve_options("slurm", _ablation(tmp_path))
    with pytest.raises(LangDMLError) as info:
        _script(options, tmp_path / "out\ntouch MARK")
    assert "output folder" in str(info.value)
    mark = tmp_path / "MARK"
    text = _script(options, tmp_path / f"out;touch {mark};$(touch {mark})")
    _run_script(text, tmp_path)
    assert not mark.exists()


def test_job_name_with_a_newline_is_refused(tmp_path, fake_srun):
    options = resolve_options("slurm", _ablation(tmp_path))
    with pytest.raises(LangDMLError) as info:
        _script(options, tmp_path / "out", job_name="langdml-x\ntouch MARK")
    assert "job name" in str(info.value)


@pytest.mark.parametrize(
    "flag, value, words",
    [
        ("--partition", "gpu;touch MARK", "--partition: 'gpu;touch MARK' is not a Slurm partition"),
        ("--sbatch-extra", "acc$(x)=1", "--sbatch-extra: 'acc$(x)' is not an sbatch option name"),
        ("--mem", "1G\ntouch MARK", "--mem:"),
    ],
)
def test_command_line_flags_refuse_shell_in_one_line(tmp_path, capsys, flag, value, words):
    path = _ablation(tmp_path)
    assert main(["ablate", str(path), "--backend", "slurm", flag, value, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("langdml: error: ") and words in err and not (tmp_path / "MARK").exists()
