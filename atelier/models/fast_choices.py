"""The fast path's choices by name, in a module of their own: `atelier` commands list them in their --help
without importing fast.py (whose torch.compile import costs about a second at every start)."""

# How the fast path compiles (FastOptions.compile): chosen by the UNet's size ("auto": see fast.resolve_compile),
# not at all (CUDA graphs only), each block, the whole forward, the whole forward with autotuned GEMMs, or the UNet
# ahead of time into a package on disk (aot.py).
COMPILE_MODES = ("auto", "none", "blocks", "full", "max-autotune", "aot")
# The UNet's matmul precision: "native" (the checkpoint's dtype), or fp8 with one scale per tensor or per row.
PRECISIONS = {"native": None, "fp8": "tensor", "fp8-row": "row"}
