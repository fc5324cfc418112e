"""The HTTP edge: the web server of `refloop serve` (docs/core.md, "The web server").

An asyncio HTTP/1.1 server (the llhttp parser through httptools) that reads every request
completely, within a whole-request deadline and size limits, before anything else sees it:

- routes (the hook endpoint) take the request at the edge itself: decided on the headers
  (401/429 before any body byte), stored by the loop's group commit, no thread involved;
- everything else goes, complete and buffered, to the WSGI application (Flask) on a small
  thread pool.

A slow or stalled client therefore costs one socket and a few hundred bytes, never a thread.
"""
