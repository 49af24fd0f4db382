"""``--factory`` imports the user's module without letting the working directory shadow libraries."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_model

from synbal._adapters.torch.files import load_factory
from synbal.errors import ModelError


def _synbal(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # -P: like the `synbal` console script, the working directory is not put on sys.path by Python
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p and p != str(cwd))}
    return subprocess.run([sys.executable, "-P", "-m", "synbal._cli.main", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_a_module_in_the_working_directory_cannot_shadow_a_library(tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    (tmp_path / "safetensors.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    (tmp_path / "torch.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    save_model(net, str(tmp_path / "w.safetensors"))
    (tmp_path / "mymodels.py").write_text(
        "import torch\n\ndef build():\n    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), "
        "torch.nn.Linear(4, 2))\n")
    for factory in ("torch.nn:Identity", "mymodels:build"):
        proc = _synbal(tmp_path, "balance", "--factory", factory, "--weights", "w.safetensors",
                       "--example-shape", "2,3", "-o", f"out-{factory.replace(':', '_')}.safetensors")
        assert not marker.exists(), proc.stderr
        assert "Traceback" not in proc.stderr
    assert (tmp_path / "out-mymodels_build.safetensors").exists()  # the user's own module still imports


def test_an_installed_module_wins_over_one_in_the_working_directory(tmp_path: Path, monkeypatch) -> None:
    """The quick variant: ``colorsys`` (stdlib, not imported yet) must not come from the working directory."""
    marker = tmp_path / "MARKER"
    (tmp_path / "colorsys.py").write_text(f"open({str(marker)!r}, 'w').close()\nrgb_to_hsv = None\n")
    save_model(torch.nn.Linear(2, 2), str(tmp_path / "w.safetensors"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "colorsys", raising=False)
    with pytest.raises(ModelError, match="missing 3 required positional arguments"):
        load_factory("colorsys:rgb_to_hsv", tmp_path / "w.safetensors", (1, 2))  # the real one: a function
    assert not marker.exists()


def test_the_working_directory_is_on_sys_path_only_for_the_import(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "factory_mod_x.py").write_text("import torch\n\ndef build():\n    return torch.nn.Linear(2, 2)\n")
    torch.manual_seed(0)
    save_model(torch.nn.Linear(2, 2), str(tmp_path / "w.safetensors"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    before = list(sys.path)
    loaded = load_factory("factory_mod_x:build", tmp_path / "w.safetensors", (1, 2))
    assert isinstance(loaded.model, torch.nn.Linear)
    assert sys.path == before
    sys.modules.pop("factory_mod_x", None)


def test_help_says_factory_runs_code(capsys) -> None:
    from synbal._cli.main import main

    assert main(["balance", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "IMPORTS AND RUNS" in text and "--trust-pickle" in text
