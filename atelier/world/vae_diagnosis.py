"""Where an autoencoder loses the kinds the judge reads, and whether the judge is part of the loss.

The vae stage keeps a VAE by one number: the share of drawn objects whose kind the judge (the classifier stage's
network) still reads after a round trip (`evaluate.object_kind_accuracy`, through `evaluate.vae_round_trip`). This
module reads the same number on the same fresh renders under other damage, and breaks it down:

    conditions  clean renders; each VAE's round trip; Gaussian blur (sigma in pixels); a 2x bilinear downscale and
                back; JPEG; Gaussian noise. Every condition ends on the 8-bit grid, as a saved PNG does.
    groups      per kind (with its main misreadings), per size, per time of day, per weather, per place: the
                same metric on the scenes keeping only that group's objects (`keep_objects`)
    PSNR        of the whole image, and of each object's own pixels (`object_masks`: where the scene rendered
                without it differs), pooled per kind

The reading it allows: if a blur about as close to the renders as the round trips (same PSNR) costs the judge
about as many points, the judge is brittle to softness and part of the gap is the judge's; if the blur keeps the
kinds and the round trip does not, the VAE draws the wrong thing, not a soft version of the right one.

    python -m atelier.world.vae_diagnosis --classifier runs/embedded/classifier.safetensors \
        --vae runs/embedded/vae.safetensors --count 1000 --out runs/vaediag
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from atelier.imaging import bhwc_uint8_to_bchw_signed, signed_to_uint8, uint8_to_signed
from atelier.world.evaluate import kind_confusions, object_kind_accuracy

# --------------------------------------------------------------------------------------------------------------
# Damage: (N, 3, H, W) in [-1, 1] -> the same, rounded to 8 bits like vae_round_trip's output
# --------------------------------------------------------------------------------------------------------------


def on_8_bits(images: torch.Tensor) -> torch.Tensor:
    """Clamped to [-1, 1] and put on the 8-bit grid, as a PNG stores it (vae_round_trip ends the same way)."""
    return uint8_to_signed(signed_to_uint8(images))


def gaussian_kernel(sigma: float) -> torch.Tensor:
    """The 1-D Gaussian of standard deviation `sigma` pixels, radius ceil(3 sigma), summing to 1: (2r + 1,)."""
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """A separable Gaussian blur (rows, then columns; edges reflected), on 8 bits."""
    k = gaussian_kernel(sigma)
    c, r = images.shape[1], len(k) // 2
    x = F.pad(images.float(), (r, r, r, r), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)  # along the rows
    x = F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)  # along the columns
    return on_8_bits(x)


def down_up(images: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """Downscaled `factor` times (bilinear with antialiasing, as PIL resizes) and back up (bilinear), on 8 bits."""
    h, w = images.shape[-2:]
    small = F.interpolate(images.float(), size=(h // factor, w // factor), mode="bilinear", antialias=True)
    return on_8_bits(F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False))


def jpeg(images: torch.Tensor, quality: int) -> torch.Tensor:
    """Each image saved as a JPEG of `quality` (PIL, 4:2:0 chroma) and read back."""
    out = []
    for picture in signed_to_uint8(images).permute(0, 2, 3, 1).numpy():  # (H, W, 3) uint8 each
        buffer = io.BytesIO()
        Image.fromarray(picture).save(buffer, format="JPEG", quality=quality)
        out.append(np.asarray(Image.open(buffer).convert("RGB")))
    return bhwc_uint8_to_bchw_signed(np.stack(out))


def gaussian_noise(images: torch.Tensor, std_8bit: float, seed: int = 0) -> torch.Tensor:
    """Independent Gaussian noise of `std_8bit` levels (of 255) on every value, on 8 bits; seeded."""
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed)) * (2 * std_8bit / 255)
    return on_8_bits(images.float() + noise)


# --------------------------------------------------------------------------------------------------------------
# How close: PSNR of whole images and of each object's own pixels
# --------------------------------------------------------------------------------------------------------------


def squared_errors(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per pixel, the squared error averaged over the channels, on the 8-bit scale: (N, H, W)."""
    return ((a.float() - b.float()) * 127.5).pow(2).mean(dim=1)


def psnr_of_mse(mse: float) -> float:
    """10 log10(255^2 / MSE) in dB, for an MSE on the 8-bit scale (inf for identical pixels)."""
    return math.inf if mse <= 0 else 10 * math.log10(255**2 / mse)


def object_masks(scene, render: Callable, size: int) -> list[np.ndarray]:
    """Per object of `scene`, its own pixels: (H, W) bool, where the scene rendered without it differs. Objects
    keep apart (`objects_fit_together`) and the weather is drawn under them, so each mask is one object."""
    full = render(scene, size).astype(np.int16)
    masks = []
    for i in range(len(scene.objects)):
        without = dataclasses.replace(scene, objects=scene.objects[:i] + scene.objects[i + 1 :])
        masks.append(np.any(render(without, size).astype(np.int16) != full, axis=-1))
    return masks


# --------------------------------------------------------------------------------------------------------------
# The vae stage's metric, per group of objects
# --------------------------------------------------------------------------------------------------------------


def keep_objects(scenes: Sequence, keep: Callable) -> list:
    """The scenes with only the objects for which `keep(scene, obj)` holds (the others are simply not asked about:
    `object_kind_accuracy` on these reads the same cells, and counts only the kept objects)."""
    return [dataclasses.replace(s, objects=tuple(o for o in s.objects if keep(s, o))) for s in scenes]


# What an object is grouped by. A plain backdrop has no time or weather: it is its own group ("plain").
GROUPINGS: dict[str, Callable] = {
    "kind": lambda scene, obj: obj.kind,
    "size": lambda scene, obj: obj.size,
    "time": lambda scene, obj: scene.time or "plain",
    "weather": lambda scene, obj: scene.weather or "plain",
    "place": lambda scene, obj: scene.background,
}


def accuracy_by(readings: Sequence, scenes: Sequence, group: Callable) -> dict[str, tuple[float, int]]:
    """{group: (object_kind_accuracy of its objects, how many objects)}, groups in first-seen order."""
    names = list(dict.fromkeys(group(s, o) for s in scenes for o in s.objects))
    out = {}
    for name in names:
        kept = keep_objects(scenes, lambda s, o, name=name: group(s, o) == name)
        out[name] = (object_kind_accuracy(readings, kept), sum(len(s.objects) for s in kept))
    return out


def pooled_psnr(object_se: Sequence[tuple], group: Callable) -> dict[str, float]:
    """{group: PSNR of the mean of its objects' squared errors}, from (scene, object, squared error) triples."""
    pooled: dict[str, list[float]] = {}
    for scene, obj, se in object_se:
        pooled.setdefault(group(scene, obj), []).append(se)
    return {name: psnr_of_mse(float(np.mean(v))) for name, v in pooled.items()}


def misreadings_of(readings: Sequence, scenes: Sequence, kind: str, top: int = 3) -> list[tuple[str, int]]:
    """The `top` most frequent readings of `kind`'s objects that are not `kind` ("empty": nothing seen)."""
    kept = keep_objects(scenes, lambda s, o: o.kind == kind)
    return [(got, n) for _, got, n in kind_confusions(readings, kept, top)]


# --------------------------------------------------------------------------------------------------------------
# The decoder's ceiling: the best latent it can be given
# --------------------------------------------------------------------------------------------------------------


def optimised_latents(vae, images: torch.Tensor, steps: int, lr: float = 0.1, edge_weight: float = 0.5):
    """Latents fitted to `images` for the VAE's frozen decoder, from the encoder's means, by Adam on the vae
    stage's loss (L1 + edge_weight x L1 of the edges): (N, C, h, w), and the loss at each step.

    What the decoder draws from these is the most it can draw from any latent near the encoder's: if the judge
    reads many more kinds through them, the encoder is the limit (an amortisation gap); if not, the decoder and
    the latent's size are."""
    from atelier.world.train.vae import reconstruction_errors

    for p in vae.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        z = vae.encode(images).mean.clone()
    z.requires_grad_(True)
    opt, losses = torch.optim.Adam([z], lr=lr), []
    for _ in range(steps):
        l1, edge = reconstruction_errors(vae.decode(z), images)
        loss = l1 + edge_weight * edge
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    for p in vae.parameters():
        p.requires_grad_(True)
    return z.detach(), losses


# --------------------------------------------------------------------------------------------------------------
# The sheet for docs/: the worst kinds, one object each, clean / round trip / blurred
# --------------------------------------------------------------------------------------------------------------


def object_crop(image: np.ndarray, obj, side: int = 56) -> np.ndarray:
    """The `side` x `side` pixels around `obj`'s centre (its cell and jitter), inside the image: (side, side, 3)."""
    from atelier.world.scene import CELL_CENTRES

    h, w = image.shape[:2]
    cx = round((CELL_CENTRES[obj.cell[1]] + obj.offset[0]) * w)
    cy = round((CELL_CENTRES[obj.cell[0]] + obj.offset[1]) * h)
    x0, y0 = min(max(0, cx - side // 2), w - side), min(max(0, cy - side // 2), h - side)
    return image[y0 : y0 + side, x0 : x0 + side]


def sheet(rows: Sequence[tuple[str, Sequence[np.ndarray]]], columns: Sequence[str], zoom: int = 2) -> Image.Image:
    """A labelled grid: one row per (label, crops), the crops (h, w, 3) uint8 magnified `zoom` times (nearest)."""
    h, w = rows[0][1][0].shape[:2]
    cell_w, cell_h, left, top = w * zoom, h * zoom, 150, 16
    out = Image.new("RGB", (left + cell_w * len(columns), top + cell_h * len(rows)), "white")
    draw = ImageDraw.Draw(out)
    for j, name in enumerate(columns):
        draw.text((left + j * cell_w + 3, 2), name, fill="black")
    for i, (label, crops) in enumerate(rows):
        for line, text in enumerate(label.split("\n")):
            draw.text((3, top + i * cell_h + 3 + 12 * line), text, fill="black")
        for j, crop in enumerate(crops):
            big = Image.fromarray(crop).resize((cell_w, cell_h), Image.NEAREST)
            out.paste(big, (left + j * cell_w, top + i * cell_h))
    return out


# --------------------------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------------------------


def damages(blur: Sequence[float], jpeg_quality: Sequence[int], noise: Sequence[float]) -> dict[str, Callable]:
    """Condition name -> the damage it does to clean images, in the order the report lists them."""
    out: dict[str, Callable] = {f"blur {s:g} px": (lambda x, s=s: gaussian_blur(x, s)) for s in blur}
    out["down-up x2"] = down_up
    out |= {f"jpeg q{q}": (lambda x, q=q: jpeg(x, q)) for q in jpeg_quality}
    out |= {f"noise {s:g}/255": (lambda x, s=s: gaussian_noise(x, s)) for s in noise}
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    from atelier.world.train.vae import JUDGE_SCENES_SEED

    p = argparse.ArgumentParser(prog="python -m atelier.world.vae_diagnosis", description=__doc__.split("\n")[0])
    p.add_argument("--classifier", type=Path, required=True, help="the judge: a v2 classifier.safetensors")
    p.add_argument("--vae", type=Path, action="append", default=[], help="a vae.safetensors to round-trip (repeat)")
    p.add_argument("--count", type=int, default=1000, help="fresh renders (the vae stage's judge reads 1000)")
    p.add_argument("--seed", type=int, default=JUDGE_SCENES_SEED, help="their seed (default: the vae stage's)")
    p.add_argument("--start", type=int, default=0, help="index of the first scene of that seed")
    p.add_argument("--blur", type=float, nargs="*", default=[0.5, 1.0, 1.5], help="Gaussian blur sigmas, pixels")
    p.add_argument("--jpeg", type=int, nargs="*", default=[75], help="JPEG qualities")
    p.add_argument("--noise", type=float, nargs="*", default=[4.0], help="noise standard deviations, of 255")
    p.add_argument(
        "--optimise-latents",
        type=int,
        default=0,
        metavar="N",
        help="also fit latents for the first VAE's decoder on N renders that its round trip misreads (slow: ~0.2 s "
        "per image and step on one CPU core)",
    )
    p.add_argument("--optimise-steps", type=int, default=60, help="Adam steps of --optimise-latents")
    p.add_argument("--worst", type=int, default=8, help="kinds on the sheet, worst round trip first")
    p.add_argument("--out", type=Path, required=True, help="folder for report.json, report.md and sheet.png")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict:
    from atelier.world.evaluate import new_classifier, read_images, render_labelled, vae_round_trip
    from atelier.world.train.weights import load_vae_file, load_weights
    from atelier.world.worlds import get_world

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    world = get_world("v2")
    clock = time.time()
    rendered, _, scenes = render_labelled(args.seed, args.count, 128, 1, start=args.start, world="v2")
    clean = bhwc_uint8_to_bchw_signed(rendered)  # (N, 3, 128, 128) in [-1, 1]
    masks = [object_masks(s, world.render, 128) for s in scenes]  # per scene, per object: (H, W) bool
    classifier = new_classifier("v2").eval()
    load_weights(args.classifier, classifier)

    conditions: dict[str, torch.Tensor] = {"clean": clean}
    for path in args.vae:
        conditions[f"round trip {path.parent.name}/{path.stem}"] = vae_round_trip(
            load_vae_file(path).eval(), clean, batch=32
        )
    for name, damage in damages(args.blur, args.jpeg, args.noise).items():
        conditions[name] = damage(clean)

    report: dict = {"count": args.count, "seed": args.seed, "start": args.start, "conditions": {}}
    readings_of = {}
    for name, images in conditions.items():
        readings = readings_of[name] = read_images(classifier, images, world="v2")
        errors = squared_errors(images, clean)  # (N, H, W)
        object_se = [  # per object, the mean squared error of its own pixels, with the object's scene
            (scene, obj, float(errors[n][torch.from_numpy(mask)].mean()))
            for n, scene in enumerate(scenes)
            for obj, mask in zip(scene.objects, masks[n], strict=True)
        ]
        report["conditions"][name] = {
            "object_kind": object_kind_accuracy(readings, scenes),
            "psnr": psnr_of_mse(float(errors.mean())),
            "object_psnr": psnr_of_mse(float(np.mean([se for _, _, se in object_se]))),
            **{f"object_psnr_by_{g}": pooled_psnr(object_se, fn) for g, fn in GROUPINGS.items()},
            **{f"by_{g}": accuracy_by(readings, scenes, fn) for g, fn in GROUPINGS.items()},
            "misreadings": {k: misreadings_of(readings, scenes, k) for k in world.kinds},
        }
        row = report["conditions"][name]
        print(f"[diagnose] {name}: kind {row['object_kind']:.1%}, PSNR {row['psnr']:.1f} dB", flush=True)
    if args.optimise_latents and args.vae:
        report["optimised_latents"] = decoder_ceiling(
            load_vae_file(args.vae[0]).eval(), classifier, clean, scenes, readings_of, args
        )
        print(f"[diagnose] optimised latents: {report['optimised_latents']}", flush=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=1))
    (args.out / "report.md").write_text(markdown(report))
    if args.vae:
        trip = next(n for n in conditions if n.startswith("round trip"))
        blur = next((n for n in conditions if n.startswith("blur 1 ")), None) or next(iter(conditions))
        worst_sheet(scenes, conditions, readings_of, report, trip, blur, args.worst).save(args.out / "sheet.png")
    print(f"[diagnose] {args.out}/report.md in {time.time() - clock:.0f} s", flush=True)
    return report


def decoder_ceiling(vae, classifier, clean, scenes, readings_of, args) -> dict:
    """The judge through the round trip and through `optimised_latents` on the first renders holding an object the
    round trip misreads and the clean render does not (a sample of the hard cases, not of all)."""
    from atelier.world.evaluate import read_images

    trip = next(n for n in readings_of if n.startswith("round trip"))
    hard = [
        n
        for n, scene in enumerate(scenes)
        if any(
            {o.cell: o.kind for o in readings_of[trip][n].objects}.get(o.cell) != o.kind
            and {o.cell: o.kind for o in readings_of["clean"][n].objects}.get(o.cell) == o.kind
            for o in scene.objects
        )
    ][: args.optimise_latents]
    images, hard_scenes = clean[hard], [scenes[n] for n in hard]
    z, losses = optimised_latents(vae, images, args.optimise_steps)
    with torch.no_grad():
        fitted = on_8_bits(vae.decode(z))
        encoded = on_8_bits(vae.decode(vae.encode(images).mean))
    return {
        "images": len(hard),
        "steps": args.optimise_steps,
        "loss": [losses[0], losses[-1]],
        "object_kind_encoded": object_kind_accuracy(read_images(classifier, encoded, world="v2"), hard_scenes),
        "object_kind_optimised": object_kind_accuracy(read_images(classifier, fitted, world="v2"), hard_scenes),
        "psnr_encoded": psnr_of_mse(float(squared_errors(encoded, images).mean())),
        "psnr_optimised": psnr_of_mse(float(squared_errors(fitted, images).mean())),
    }


def worst_sheet(scenes, conditions, readings_of, report, trip: str, blur: str, worst: int) -> Image.Image:
    """One row per worst kind (by round trip): an object of it that the round trip misreads, three ways."""
    by_kind = report["conditions"][trip]["by_kind"]
    clean_by_kind = report["conditions"]["clean"]["by_kind"]
    kinds = sorted(by_kind, key=lambda k: by_kind[k][0])[:worst]
    pictures = {name: signed_to_uint8(conditions[name]).permute(0, 2, 3, 1).numpy() for name in ("clean", trip, blur)}
    rows = []
    for kind in kinds:
        found = None
        for n, scene in enumerate(scenes):
            seen = {o.cell: o.kind for o in readings_of[trip][n].objects}
            clean_seen = {o.cell: o.kind for o in readings_of["clean"][n].objects}
            for obj in scene.objects:
                if obj.kind == kind and clean_seen.get(obj.cell) == kind and seen.get(obj.cell) != kind:
                    found = (n, obj, seen.get(obj.cell, "empty"))
                    break
            if found:
                break
        if found is None:
            continue
        n, obj, got = found
        label = f"{kind} ({obj.size})\nclean {clean_by_kind[kind][0]:.0%}\ntrip {by_kind[kind][0]:.0%}\nread: {got}"
        rows.append((label, [object_crop(pictures[name][n], obj) for name in ("clean", trip, blur)]))
    return sheet(rows, ["render", "round trip", blur])


def nearest_in_psnr(report: dict, name: str, prefix: str = "blur") -> str | None:
    """The condition starting with `prefix` whose whole-image PSNR is nearest to condition `name`'s."""
    conds = report["conditions"]
    others = [n for n in conds if n.startswith(prefix)]
    return min(others, key=lambda n: abs(conds[n]["psnr"] - conds[name]["psnr"])) if others else None


def markdown(report: dict) -> str:
    """report.json as tables: the conditions, then per kind (worst round trip first), size, time, weather, place,
    each with the objects' PSNR through the first round trip and through the blur nearest to it in PSNR."""
    conds = report["conditions"]
    names = list(conds)
    lines = ["| condition | kind of drawn objects | PSNR (dB) | PSNR of the objects' pixels |", "|---|---|---|---|"]
    lines += [f"| {n} | {c['object_kind']:.1%} | {c['psnr']:.1f} | {c['object_psnr']:.1f} |" for n, c in conds.items()]
    trip = next((n for n in names if n.startswith("round trip")), names[0])
    matched = nearest_in_psnr(report, trip) or trip
    for group in GROUPINGS:
        rows = conds["clean"][f"by_{group}"]
        order = sorted(rows, key=lambda k: conds[trip][f"by_{group}"][k][0])
        columns = [group, "objects", *names, f"objects' PSNR (dB), {trip}", f"objects' PSNR, {matched}"]
        columns += ["the trip reads it as"] if group == "kind" else []
        lines += ["", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        for key in order:
            cells = [f"{conds[n][f'by_{group}'][key][0]:.0%}" for n in names]
            cells += [f"{conds[n][f'object_psnr_by_{group}'][key]:.1f}" for n in (trip, matched)]
            if group == "kind":
                cells.append(", ".join(f"{got} {k}" for got, k in conds[trip]["misreadings"][key]))
            lines.append(f"| {key} | {rows[key][1]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
