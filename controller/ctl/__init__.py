"""The operator commands of the `automator67` console script: `nodes`, `deployments`, `stats`
and `status`, built on the Python SDK (`automator67.client`).

A command's flags are declared in `parsers.py`, which imports nothing but argparse, so that
`automator67 --help` stays fast; its handler module (`nodes.py`, `deployments.py`, `fleet.py`)
is imported only when the command runs. `connection.py` turns flags and `A67_*` variables into
a client, `output.py` renders tables and proto3 JSON, `failures.py` maps errors to one line on
stderr and an exit code (`ExitCode`), `resolve.py` finds a resource by id prefix or name,
`spec.py` reads a deployment from flags and a JSON/YAML file, `wait.py` follows a deployment
until it runs or is gone."""
