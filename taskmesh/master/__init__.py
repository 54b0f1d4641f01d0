"""The master daemon: submission API (gRPC and REST), dispatcher, reaper.

Entry points live in ``taskmesh.master.command`` (``serve_master``, ``register_cli``; cheap to
import); the daemon itself is ``taskmesh.master.daemon.Master``.
"""
