"""dlm-lsp: code completion by fill-in-the-middle infilling with a masked diffusion model."""

__version__ = "0.1.0"
DISTRIBUTION = "dlm-language-server"  # the name on PyPI; the command stays `dlm-lsp`
