"""Serving over HTTP: the FIM API server (``serve_http``, ``fim_api``), the same app on Ray
Serve (``ray_serve``), and the LSP's ``backend: "remote"`` client of it (``remote``).

It calls into ``dlm_lsp.pipeline`` and ``dlm_lsp.model``; the protocol side imports only
``remote`` from here.
"""
