"""Where the packages live (the rest of the metadata is in pyproject.toml).

`automator67` is the Python SDK (sdk/python/automator67, hand-written) and `automator67.v1` the
code generated from protos/ (generated/automator67/v1): one package over two folders, so the
controller, its reference agent and the SDK's own wheel (scripts/build_python_sdk.py) all import
the same `automator67`."""

from setuptools import find_packages, setup

setup(
    packages=[
        *find_packages(include=["controller", "controller.*"]),
        "automator67",
        "automator67.v1",
    ],
    package_dir={
        "automator67": "sdk/python/automator67",
        "automator67.v1": "generated/automator67/v1",
    },
)
