"""Loss curves of a training run (the stages' *.log.jsonl files) as PNGs, for docs/.

    .venv/bin/python scripts/plot_training.py docs/training docs/training
"""

import json
import sys
from pathlib import Path

from atelier.plots import line_chart

CURVES = {
    "vae": ["l1", "edge"],
    "decoder": ["l1", "edge"],
    "clip": ["loss"],
    "classifier": ["loss"],
    "unet": ["loss", "mse"],
}


def main(logs: Path, out: Path) -> None:
    for stage, keys in CURVES.items():
        path = logs / f"{stage}.log.jsonl"
        if not path.exists():
            continue
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        records = [r for r in records if "step" in r and all(k in r for k in keys)]  # loss lines, not notes
        # Runs of several sessions with other batch sizes are compared by training images seen, when logged.
        x_key, x_label, scale = ("images", "training images seen (millions)", 1e-6) if "images" in records[0] else (
            "step", "step", 1)
        series = {k: ([r[x_key] * scale for r in records], [r[k] for r in records]) for k in keys}
        target = out / f"{stage}-loss.png"
        line_chart(series, target, title=f"{stage}: training loss", x_label=x_label, y_label="loss", log_y=True)
        print(target)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
