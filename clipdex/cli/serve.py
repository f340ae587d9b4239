"""`clipdex serve`: the web page and JSON API over the library (FastAPI on uvicorn)."""

from __future__ import annotations

import os
import socket

import click

from clipdex.cli.common import info, pass_state, runtime_option


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (loopback by default).")
@click.option(
    "--port", default=8765, show_default=True, type=click.IntRange(0, 65535), help="0: any free port."
)
@click.option("--open", "open_browser", is_flag=True, help="Open the page in the default browser.")
@click.option("--token", default=None, help="Require this token on /api (default: $CLIPDEX_TOKEN).")
@click.option("--allow-host", multiple=True, metavar="NAME",
              help="Also answer for this Host name (repeatable; with a non-loopback --host).")  # fmt: skip
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or mps.")
@click.option("--max-upload-mb", default=20.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Largest accepted query image upload.")  # fmt: skip
@click.option("--watch", "watch_folders", multiple=True, type=click.Path(path_type=bytes), metavar="FOLDER",
              help="Also follow FOLDER like `clipdex watch` (repeatable).")  # fmt: skip
@runtime_option
@pass_state
def serve(state, host, port, open_browser, token, allow_host, device, max_upload_mb, watch_folders, runtime):
    """Serve a search page and a JSON API for the library (Ctrl-C stops).

    The model and indexes stay loaded, so a query costs its encoding plus the search. Loopback by
    default; binding another address needs a token (--token or CLIPDEX_TOKEN), which the page asks
    for once. API: /api/search, /api/items/ID[/similar|/thumbnail|/file], /api/info; docs at /docs.

    \b
    Examples:
      clipdex serve --open
      clipdex serve --port 9000
      CLIPDEX_TOKEN=s3cret clipdex serve --host 0.0.0.0 --allow-host photos.lan
      clipdex serve --watch ~/Pictures       # new pictures appear by themselves
    """
    from clipdex.serve.security import is_loopback

    token = token or os.environ.get("CLIPDEX_TOKEN") or None
    if not is_loopback(host) and not token:
        raise click.UsageError(f"binding {host} (not loopback) needs --token TOKEN or CLIPDEX_TOKEN")
    from clipdex.errors import ClipdexError
    from clipdex.library import check_folders

    check_folders(watch_folders)  # before the server starts: a missing FOLDER exits 1
    lib = state.open(device=device, gpu_index=True, runtime=runtime)  # long-running: a GPU copy pays off
    with lib:
        if lib.spec is not None:
            info(f"clipdex: loading model {lib.spec} ({lib.query_runtime}) …")
            lib.encode_texts(["warm up"])  # loaded now (ONNX or torch): the first query does not pay
        sock = _bind(host, port, ClipdexError)
        url = _url(host, sock.getsockname()[1])
        following = _follow(state, watch_folders, device, runtime) if watch_folders else None
        try:
            _run(lib, sock, url, token=token, host=host, allow_host=allow_host, max_upload_mb=max_upload_mb,
                 open_browser=open_browser, watching=[os.fsdecode(f) for f in watch_folders])  # fmt: skip
        finally:
            if following is not None:
                following.stop()  # the batch under way is finished
    info("clipdex: stopped")


def _follow(state, folders, device, runtime):
    from clipdex.cli.common import problem
    from clipdex.serve.following import Following

    def on_batch(b) -> None:
        info(f"clipdex: {b.added} added, {b.updated} updated, {b.moved} moved, {b.removed} removed, "
             f"{b.failed} failed")  # fmt: skip

    following = Following(lambda: state.open(device=device, runtime=runtime), list(folders), info,
                          on_batch=on_batch, problem=problem)  # fmt: skip
    following.start()
    return following


def _bind(host: str, port: int, error: type[Exception]) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must be IPPROTO_TCP, not the default 0: asyncio sets TCP_NODELAY on an accepted
    # connection only when its socket's proto says TCP (accepted sockets copy the listener's).
    # Without it Nagle's algorithm held back the body uvicorn writes after the headers until the
    # client's delayed ACK: ~40 ms per response on a kept-alive connection (issue 16).
    # uvicorn's own Config.bind_socket passes the same proto for the same reason.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as e:
        sock.close()
        raise error(f"cannot listen on {host}:{port}: {e.strerror or e}") from e
    sock.set_inheritable(True)
    return sock


def _url(host: str, port: int) -> str:
    shown = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(host, f"[{host}]" if ":" in host else host)
    return f"http://{shown}:{port}/"


def _run(lib, sock, url, *, token, host, allow_host, max_upload_mb, open_browser, watching=()) -> None:
    import copy
    import threading
    import webbrowser

    import uvicorn

    from clipdex.serve.app import create_app

    app = create_app(lib, token=token, bind_host=host, allow_hosts=allow_host, max_upload_mb=max_upload_mb,
                     watching=list(watching))  # fmt: skip
    lib.preload()  # a server answers many queries: map the index's pages once, up front
    logging = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    logging["handlers"]["access"]["stream"] = "ext://sys.stderr"  # stdout is for the URL only
    config = uvicorn.Config(app, log_level="info", log_config=logging, timeout_graceful_shutdown=3)
    server = uvicorn.Server(config)
    click.echo(f"clipdex: serving {lib.path} at {url}  (Ctrl-C stops)")
    if open_browser:
        threading.Timer(0.5, webbrowser.open, args=(url,)).start()
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it handled, after a clean shutdown
        pass
    finally:
        sock.close()


COMMANDS = [serve]
