"""The install (pyproject.toml) lists every package of the controller: a new folder with an
`__init__.py` that the list misses would be left out of the wheel and of editable installs."""

from __future__ import annotations

import tomllib

from tests.e2e.controller_process import ROOT


def test_every_controller_package_is_installed() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "controller").rglob("__init__.py")
    }
    assert found <= listed, sorted(found - listed)
    assert {"automator67", "automator67.v1"} <= listed
