"""The node graph: schemas, core nodes, validation, execution and caching (ComfyUI-compatible)."""
