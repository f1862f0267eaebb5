"""Running the API under uvicorn with logging that never blocks the event loop.

uvicorn writes an access line per request from the event loop; at thousands of polls a second, a write that waits
on the terminal or the disk stalls every request behind it (the polling p99's tail). Here every record goes through
a queue to one thread that does the writing (logging.handlers.QueueHandler / QueueListener), with the handlers the
CLI configured; uvicorn's own logging set-up is turned off so that its loggers use the same path.
"""

import logging
import logging.handlers
import queue


def run_api(app, host: str, port: int, **uvicorn_options) -> None:
    import uvicorn

    root = logging.getLogger()
    writers = root.handlers[:] or [logging.StreamHandler()]
    records: queue.SimpleQueue = queue.SimpleQueue()
    listener = logging.handlers.QueueListener(records, *writers, respect_handler_level=True)
    root.handlers = [logging.handlers.QueueHandler(records)]
    listener.start()
    try:
        uvicorn.run(app, host=host, port=port, log_config=None, **uvicorn_options)
    finally:
        listener.stop()
        root.handlers = writers
