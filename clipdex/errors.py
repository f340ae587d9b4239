"""Errors that reach the user as one line (exit 1), never as a traceback."""


class ClipdexError(Exception):
    """A runtime problem with a one-line, user-facing message (CLI exit code 1)."""


class ModelError(ClipdexError):
    """A model could not be resolved or loaded."""


class LockHeld(ClipdexError):
    """Another process holds the library's writer lock."""


def explain_environment_error(exc: BaseException, database: str | None) -> str | None:
    """A one-line message naming the file for an error of the machine rather than of clipdex
    (a damaged database, a full disk, a permission), or None when ``exc`` is not one of those."""
    import errno
    import sqlite3

    db = database or "the library database"
    if isinstance(exc, sqlite3.DatabaseError):
        text = str(exc)
        if "disk is full" in text or "disk I/O error" in text and _disk_full(database):
            return f"disk full while writing {db}; the library is unchanged since the last commit"
        if "readonly database" in text or "unable to open database file" in text:
            return f"cannot write {db}: permission denied or read-only location ({text})"
        if "locked" in text or "busy" in text:
            return f"{db} is busy (another process holds it): {text}"
        if not isinstance(exc, sqlite3.OperationalError) or "malformed" in text or "not a database" in text:
            return f"{db} is not a clipdex database or is damaged: {text}"
        return None
    if isinstance(exc, OSError):
        where = exc.filename if exc.filename is not None else db
        if isinstance(where, bytes):
            where = where.decode("utf-8", "backslashreplace")
        if exc.errno == errno.ENOSPC:
            return f"disk full while writing {where}; the library is unchanged since the last commit"
        if exc.errno in (errno.EACCES, errno.EPERM):
            return f"permission denied: {where}"
        if exc.errno == errno.EROFS:
            return f"read-only file system: {where}"
    return None


def _disk_full(database: str | None) -> bool:
    import os

    try:
        st = os.statvfs(os.path.dirname(database or ".") or ".")
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < (1 << 20)


class QueryError(ClipdexError):
    """A query that cannot be answered as asked (e.g. its terms cancel out): the asker's fault."""


class DecodeError(ClipdexError):
    """An image could not be decoded; ``str(e)`` is a one-line reason (the caller adds the path)."""
