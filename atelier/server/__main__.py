"""`python -m atelier.server [--port N] [--listen [ADDRESS]] [--allowed-host NAME] [--data-dir DIR]`: the same as
`atelier serve`."""

from __future__ import annotations

import argparse
import sys

from atelier.errors import AtelierError
from atelier.server.app import DEFAULT_DATA_DIR, run_server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m atelier.server", description="Serve the node editor.")
    parser.add_argument("--port", type=int, default=8188, help="TCP port (default 8188)")
    parser.add_argument(
        "--listen", nargs="?", const="0.0.0.0", metavar="ADDRESS", help="bind ADDRESS (alone: 0.0.0.0, every interface)"
    )
    parser.add_argument("--allowed-host", action="append", default=[], metavar="NAME", help="one more host name")
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR), help="inputs, outputs, models and history")
    args = parser.parse_args(argv)
    try:
        return run_server(port=args.port, listen=args.listen, data_dir=args.data_dir, allowed_hosts=args.allowed_host)
    except AtelierError as error:
        print(f"atelier: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
