"""Thumbnails and example inputs of the workflow templates, made by running the templates on the embedded model.

    python -m atelier.server.thumbnails      # makes templates/inputs/*.png if missing, then every <name>-1.webp

1. Example inputs (templates/inputs/): the images that the img2img and inpainting templates load. They are drawn
   by the embedded model from EXAMPLE_INPUTS; the inpainting one gets a transparent hole, which LoadImage turns
   into its MASK output (mask = 1 - alpha). The server copies them into a data directory's input/ at start.
2. Thumbnails (templates/<name>-1.webp, 512x512): each template of templates.json is converted to a prompt and
   run through the executor in a temporary data directory; the last image it saves becomes the thumbnail. A
   template with a "solution" (the puzzle, whose links are cut) is run with the links of that other template.

It takes about ten seconds on a laptop CPU. The images depend on the embedded model: rerun it after retraining.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw

from atelier.generation import GenerationParams, api_graph
from atelier.graph.executor import EventLog, Executor
from atelier.graph.registry import NodeRegistry
from atelier.graph.validation import validate_prompt
from atelier.graph.workflow import ui_to_api
from atelier.server.files import DataDir, OutputFiles

TEMPLATES_DIR = Path(__file__).parent / "templates"
INPUTS_DIR = TEMPLATES_DIR / "inputs"
SIZE = (512, 512)

# name -> (prompt, seed, transparent box (left, top, right, bottom) or None), at the embedded model's 128x128.
EXAMPLE_INPUTS: dict[str, tuple[str, int, tuple[int, int, int, int] | None]] = {
    "atelier_example.png": ("a yellow sun above a green tree on the grass", 3, None),
    # The inpainting example: an object on the right that the repainted hole on the left leaves as it was. A
    # yellow sun keeps its colour next to a new red circle; a blue house or a pink flower turns dark, because the
    # VAE decoder sees the whole latent at once (GroupNorm statistics and mid-block attention are image-wide).
    "atelier_inpaint_example.png": ("a yellow sun on the right on the grass", 3, (8, 24, 64, 104)),
}


def txt2img_prompt(text: str, seed: int, size: int = 128, steps: int = 20) -> dict:
    """The classic seven-node API prompt on the embedded model (generation.api_graph, Euler, CFG 7.5)."""
    params = GenerationParams(text, seed=seed, steps=steps, width=size, height=size, model="embedded.safetensors")
    return api_graph(params, filename_prefix="example")


def run_prompt(prompt: dict, registry: NodeRegistry, files: OutputFiles) -> list[Path]:
    """Validate and execute an API prompt; the paths of the images it saved to output/ (previews left out)."""
    checked = validate_prompt(prompt, registry)
    if not checked.ok:
        raise RuntimeError(f"The prompt does not validate: {checked.error} {checked.node_errors}")
    log = EventLog()
    Executor(registry).execute(checked.prompt, checked.outputs, listener=log)
    if "execution_success" not in log.names():
        raise RuntimeError(f"The prompt failed: {log.payloads('execution_error')}")
    refs = [ref for _, ui in log.payloads("executed") for ref in ui.get("images", [])]
    return [files.path(ref) for ref in refs if ref["type"] == "output"]


def with_links_of(workflow: dict, solution: dict) -> dict:
    """`workflow` (same node ids as `solution`, links cut) with the links of `solution` put back."""
    solved = json.loads(json.dumps(workflow))
    nodes = {n["id"]: n for n in solved["nodes"]}
    for link_id, origin, slot, target, target_slot, _ in solution["links"]:
        nodes[target]["inputs"][target_slot]["link"] = link_id
        nodes[origin]["outputs"][slot]["links"].append(link_id)
    solved["links"] = solution["links"]
    return solved


def make_inputs(registry: NodeRegistry, files: OutputFiles, folder: Path = INPUTS_DIR) -> None:
    """Draw the example inputs that are missing from `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, (text, seed, hole) in EXAMPLE_INPUTS.items():
        if (folder / name).exists():
            continue
        [path] = run_prompt(txt2img_prompt(text, seed), registry, files)
        with Image.open(path) as img:
            image = img.convert("RGBA")
        if hole is not None:  # alpha 0 = the part to repaint
            alpha = Image.new("L", image.size, 255)
            ImageDraw.Draw(alpha).rectangle(hole, fill=0)
            image.putalpha(alpha)
        image.save(folder / name)
        print(f"wrote {folder / name}")


def main() -> None:
    from atelier.graph.catalog import default_registry

    with tempfile.TemporaryDirectory() as tmp:
        data = DataDir(tmp)
        files = OutputFiles(data)
        registry = default_registry(data.models, files)
        make_inputs(registry, files)
        data.install_inputs(INPUTS_DIR)
        for entry in json.loads((TEMPLATES_DIR / "templates.json").read_text(encoding="utf-8")):
            workflow = json.loads((TEMPLATES_DIR / f"{entry['name']}.json").read_text(encoding="utf-8"))
            if entry.get("solution"):
                solution = json.loads((TEMPLATES_DIR / f"{entry['solution']}.json").read_text(encoding="utf-8"))
                workflow = with_links_of(workflow, solution)
            saved = run_prompt(ui_to_api(workflow, registry), registry, files)
            path = TEMPLATES_DIR / f"{entry['name']}-1.webp"
            thumbnail(saved).save(path, quality=85)
            print(f"wrote {path}")


def thumbnail(saved: list[Path]) -> Image.Image:
    """A SIZE thumbnail of what a template saved: its image, or its images side by side when it saves several
    (the hires fix: its second pass beside a plain upscale), in the order they were saved."""
    sheet = Image.new("RGB", SIZE, (32, 32, 32))
    width = SIZE[0] // len(saved)
    for i, file in enumerate(saved):
        with Image.open(file) as image:
            tile = image.convert("RGB").resize((width, width * SIZE[1] // SIZE[0]), Image.Resampling.LANCZOS)
        sheet.paste(tile, (i * width, (SIZE[1] - tile.height) // 2))
    return sheet


if __name__ == "__main__":
    main()
