"""Training the embedded denoiser and its autoregressive twin (not imported by the server)."""
