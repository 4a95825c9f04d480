"""Automator67 controller: a gRPC control plane for nodes and the deployments placed on them."""

__version__ = "0.1.0"
