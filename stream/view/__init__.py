"""``sigstream view``: a live web page of a running service and of codec link ends.

The view is a subscriber like any client: it reads the service's results socket, asks the
service's input mirror (``sigstream run ... --mirror``) for the inputs of the stream a viewer
chose, and reads the service's ``/readyz`` (and the ``/metrics`` of codec link ends). Each path
declares how its streams are drawn (:class:`stream.paths.ViewSpec`); the page (``static/``:
plain JavaScript and uPlot, shipped in the package, nothing fetched at run time) draws the
overview of every stream and the chosen stream's panel.

- :mod:`stream.view.state` — what the view knows, bounded, as JSON snapshots;
- :mod:`stream.view.panels` — what each panel draws, and the helpers a path's digest uses;
- :mod:`stream.view.server` — aiohttp and ZeroMQ on one event loop;
- :mod:`stream.view.process` — ``sigstream view``, and the view beside ``sigstream run``.
"""
