"""``taskmesh bench``: a local cluster on a durable embedded PostgreSQL, measured end to end.

Every figure is read back from the ledger's timestamps or from ``/proc``; nothing is estimated.
See ``taskmesh bench --help`` and the README's "Performance" section.
"""
