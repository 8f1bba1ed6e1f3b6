"""Atelier : Architecture de la Diffusion.

A latent-diffusion engine written to be read (tokenizer, text encoder, UNet, VAE, samplers), a lab page that
isolates each variable of a generation, and a node editor compatible with ComfyUI workflows.
"""

__version__ = "0.1.0"
