"""The model: checkpoints and families (``checkpoint``, ``families``), the bidirectional
transformer (``denoiser``), masked-diffusion decoding (``sampler``) and its variants (batched,
block diffusion, the autoregressive twin). It knows nothing of editors, LSP or HTTP.
"""
