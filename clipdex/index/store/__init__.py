"""The SQLite store: `database.Store` and one object per table (see database.py)."""
