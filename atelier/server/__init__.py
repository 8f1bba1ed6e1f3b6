"""The HTTP + WebSocket server that speaks ComfyUI's protocol and serves the lab and the node editor."""
