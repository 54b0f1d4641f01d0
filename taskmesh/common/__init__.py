"""Shared by every tier: topology, ledger, wire contract, errors, retries, daemon plumbing."""
