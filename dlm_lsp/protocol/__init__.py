"""The protocol side: the pygls language server and what only it needs.

Thin LSP handlers (``server``), conversion of candidates and edits into LSP items
(``lsp_items``), position encodings (``positions``) and the request gate and model thread
(``scheduler``). It calls into ``dlm_lsp.pipeline`` (and ``dlm_lsp.serving.remote`` for the
remote backend); nothing below it imports from here.
"""
