"""taskmesh worker tier: executes its region's assignments in slots and reports back.

``Worker`` (``daemon``) is the process: ``RegionLink`` keeps the ``WorkerLink.Connect`` stream,
``Foreman`` acts on the region's messages, ``SlotPool`` runs commands through ``executor``,
``Outbox`` keeps results until acked; ``metrics`` and ``grpc_health`` serve operators.
``serve_worker`` and ``register_cli`` (``entrypoint``) are the entry points. A worker holds no
ledger credentials and imports neither the ledger nor another tier.
"""
