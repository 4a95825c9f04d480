"""The operator commands of the `automator67` console script: `nodes`, `deployments`, `stats`
and `status`, built on the Python SDK (`automator67.client`); nothing here imports the server.

A command's flags are declared in `commands.py`, which imports nothing but argparse, so that
`automator67 --help` stays fast; `run.py` imports the command's handler module (`nodes.py`,
`deployments.py`, `fleet.py`) only when the command runs, connects (`connection.py`: flags and
`A67_*` variables), and turns every failure into one line on stderr and an exit code
(`failures.py`). `output.py` renders tables and proto3 JSON, `resolve.py` finds a resource by
id prefix or name, `spec.py` reads a deployment from flags and a JSON/YAML file, `wait.py`
follows a deployment on WatchDeployments until it runs or is gone, and `interrupt.py` makes
Ctrl-C close a watch being followed (exit 130) instead of raising inside gRPC."""
