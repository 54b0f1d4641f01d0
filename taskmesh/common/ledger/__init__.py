"""The PostgreSQL ledger: schema, migrations and every SQL statement of taskmesh.

Use ``Ledger`` (``await Ledger.connect(url)``) for every read and write; run
``migrations.upgrade(url)`` once before, from synchronous code.
"""

from taskmesh.common.ledger.changes import NOTIFY_CHANNEL
from taskmesh.common.ledger.ledger import Ledger
from taskmesh.common.ledger.locks import Leadership
from taskmesh.common.ledger.retries import DEFAULT_LOST_RETRY_LIMIT

__all__ = ["DEFAULT_LOST_RETRY_LIMIT", "NOTIFY_CHANNEL", "Leadership", "Ledger"]
