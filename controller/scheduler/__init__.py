"""Placement (a pure function of a snapshot) and the reconciler that drives deployments."""
