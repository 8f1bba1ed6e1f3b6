"""`python -m atelier.server [--port N] [--listen] [--data-dir DIR]`: the same as `atelier serve`."""

from __future__ import annotations

import argparse
import sys

from atelier.server.app import DEFAULT_DATA_DIR, run_server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m atelier.server", description="Serve the node editor.")
    parser.add_argument("--port", type=int, default=8188, help="TCP port (default 8188)")
    parser.add_argument("--listen", action="store_true", help="listen on every network interface, not only localhost")
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR), help="inputs, outputs, models and history")
    args = parser.parse_args(argv)
    return run_server(port=args.port, listen=args.listen, data_dir=args.data_dir)


if __name__ == "__main__":
    sys.exit(main())
