"""Faults, load and hostile input (issue 6): see docs/reliability.md."""
