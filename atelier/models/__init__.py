"""The networks of Stable Diffusion 1.x, one file each: tokenizer, CLIP text encoder, UNet, VAE, and loading."""
