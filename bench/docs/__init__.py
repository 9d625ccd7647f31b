"""The documents benchmark: one generated collection in fazt-host and in PostgreSQL 15 (see compare.py)."""
