"""The completion pipeline, free of LSP: from a buffer and a cursor to candidates and edits.

Context windows under a token budget (``context``), tree-sitter span and hole choice
(``syntax``), the engine that runs the model (``engine``), post-processing
(``postprocess``), Instant Edit (``edits``, ``chat``), and reuse across keystrokes
(``typeahead``, ``cache``). It calls into ``dlm_lsp.model`` and knows nothing of the protocol.
"""
