"""The layout's promises that an import can break: the visualiser's scene and the pytest plugin stay light."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration  # each check needs a fresh interpreter

HEAVY = ("gmqtt", "amqtt", "cryptography", "pygame", "numba", "numpy", "matplotlib", "google.protobuf")


def _loaded_by(module: str) -> set[str]:
    """The top-level modules of HEAVY that importing `module` in a fresh interpreter loads."""
    code = f"import sys, {module}; print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_the_scene_needs_neither_the_transport_nor_cryptography() -> None:
    loaded = _loaded_by("v2x.watch.scene")
    assert not loaded & {"gmqtt", "amqtt", "cryptography", "pygame"}, loaded


def test_the_pytest_plugin_loads_nothing_heavy() -> None:
    """Installed, the plugin is loaded by every pytest run on the machine: it must cost other projects nothing."""
    assert _loaded_by("v2x.testing") == set()


def test_another_project_s_tests_run_as_without_the_plugin(tmp_path: Path) -> None:
    (tmp_path / "test_other.py").write_text("def test_plain(request):\n    assert request.node.own_markers == []\n")
    runs = {}
    for plugin in ("-p", "no:v2x"), ():
        res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *plugin, str(tmp_path)],
                             capture_output=True, text=True, cwd=tmp_path)
        runs[bool(plugin)] = (res.returncode, res.stdout.splitlines()[-1].split(" in ")[0])
    assert runs[False] == runs[True] == (0, "1 passed"), runs
