"""The web dashboard: its static page at ``/`` and the JSON and SSE endpoints the page reads."""

from taskmesh.master.dashboard.routes import Dashboard

__all__ = ["Dashboard"]
