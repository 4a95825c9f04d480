"""The reference node agent, built on the Python SDK (`automator67.agent`): `automator67 agent`.

    settings.py  what the node registers as, where the agent keeps its state (flags + env)
    state.py     the node id across restarts (an atomically written JSON file)
    load.py      the host's real load, for each beat
    backoff.py   reconnect delays (full-jitter exponential backoff)
    session.py   one heartbeat stream: drift-free beats, acks, assignments, why it ended
    workloads.py converges the replicas to the controller's Assignments; reports them each beat
    drivers/     how a replica runs: simulated (default) or exec (a local process group)
    runner.py    `Agent`: registration, the reconnect loop, signals

This package imports nothing heavy itself, so `automator67 --help` does not load grpc."""
