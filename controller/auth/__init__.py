"""Who may call the controller: bearer tokens (`tokens.py`) signed by the configured keys
(`keys.py`), the roles and the permission table (`principals.py`), and the interceptor that
applies them to every RPC (`interceptor.py`)."""
