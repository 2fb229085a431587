"""Discrete latents: the VQ-VAE (codebook, straight-through, EMA) and its PixelCNN prior."""
