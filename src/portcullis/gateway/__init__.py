"""The composition root: config → the ingress and egress runtimes, wired together.

Why a package of its own: ingress (the front door's data path) and egress (the door to third
parties) are independent of each other (an import-linter contract says so); only this package and
the ones above it (admin, cli) know both, and decide how a request at the front door reaches the
egress pipeline (``CompiledRoute.handler``).
"""
