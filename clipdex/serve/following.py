"""`serve --watch`: a watcher on a thread beside the server, with a Library of its own.

The watcher writes through its own store connection and encoder; the server's Library sees each
batch at its next request (it follows the generation), and the page learns of new pictures from
`/api/info` (see static/app.js).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class Following:
    """Runs ``open_library().watch(folders, **options)`` on a daemon thread until `stop`."""

    def __init__(self, open_library: Callable[[], Any], folders: list, report: Callable[[str], None],
                 **options: Any):  # fmt: skip
        self.lib = open_library()
        self.folders = folders
        self.report = report
        self.options = options
        self._thread = threading.Thread(target=self._run, name="clipdex-serve-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        from clipdex.errors import ClipdexError

        try:
            self.lib.watch(self.folders, **self.options)
        except ClipdexError as e:  # the server goes on serving what is indexed
            self.report(f"clipdex: watching stopped: {str(e).splitlines()[0]}")

    def stop(self) -> None:
        self.lib.stop()
        self._thread.join(timeout=30)
        self.lib.close()
