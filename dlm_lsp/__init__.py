"""dlm-lsp: code completion by fill-in-the-middle infilling with a masked diffusion model."""

__version__ = "0.1.0"
