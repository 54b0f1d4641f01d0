"""The regional scheduler: a priority queue of delegated runs, its workers, their breakers.

Entry points: ``taskmesh.region.command.serve_region`` (the daemon as a coroutine) and
``taskmesh.region.command.register_cli`` (the ``taskmesh region`` subcommand). Module map:
``daemon`` (lifecycle), ``delegation`` (the master-facing ``Region`` service), ``worker_link``
and ``worker_sessions`` (the worker stream), ``worker_registry``, ``assigner``, ``breakers``,
``ledger_writer``, ``heartbeat``, ``watchdog``, ``handover`` (graceful shutdown), ``health``
(HTTP), ``status`` (``Describe`` and readiness), ``run_queue``.
"""
