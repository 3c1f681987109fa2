"""View-side helpers: the API's error type and its JSON rendering, strict
parameter parsing, the request deadline from its header, middleware and
error handlers. Apps import these; ``project.core`` never does.
"""
