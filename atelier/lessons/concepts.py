"""Where words and pictures sit in the space the text encoder shares with the image encoder: a 2-D map.

Contrastive training (CLIP, Radford et al. 2021; world/encoders.py for the embedded model) pulls a caption's
projected embedding towards its image's and away from the others, so meaning becomes direction: the cosine of two
unit embeddings says how alike two words (or a word and a picture) are. The map keeps the two directions along
which the points spread most (principal component analysis); `explained` says how much of their spread it shows.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torch import Tensor

from atelier.errors import InputError
from atelier.imaging import pil_to_bchw_signed
from atelier.lessons.embedded import LessonModels
from atelier.models.clip import CLIPTextEncoder
from atelier.models.tokenizer import CLIPTokenizer
from atelier.world.encoders import ImageEncoder

IMAGE_SIDE = 128  # the image encoder was trained on 128x128 scenes


@dataclasses.dataclass(frozen=True)
class ConceptPoint:
    label: str
    kind: str  # "text" or "image"
    x: float
    y: float
    nearest: str  # the label of the most similar other point (itself when alone)
    nearest_similarity: float  # their cosine similarity


@dataclasses.dataclass(frozen=True)
class ConceptMap:
    points: list[ConceptPoint]  # the words first, then the images, in the order given
    explained: list[float]  # the share of the points' variance along x and along y
    similarity: np.ndarray  # (N, N) cosine similarity of every pair
    dim: int  # the embeddings' size, D


def pca_2d(vectors: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """(N, D) -> (N, 2) coordinates on the two directions of largest variance, and the share of variance of each.

    Principal component analysis: centre the points, take the SVD X = U S V^T; the first two rows of V^T are the
    directions along which the points spread most, and X V[:, :2] = U[:, :2] S[:2] are the coordinates.
    """
    centred = vectors - vectors.mean(axis=0, keepdims=True)  # (N, D)
    u, s, _ = np.linalg.svd(centred, full_matrices=False)
    coords = u[:, :2] * s[:2]  # (N, <=2)
    if coords.shape[1] < 2:
        coords = np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))
    variance = s**2
    share = (variance[:2] / variance.sum()).tolist() if variance.sum() > 0 else [0.0, 0.0]
    return coords, share + [0.0] * (2 - len(share))


@torch.no_grad()
def embed_words(text_encoder: CLIPTextEncoder, tokenizer: CLIPTokenizer, words: list[str]) -> Tensor:
    """Words or short phrases -> (W, D) unit vectors: the text encoder's `projected` output (its pooled <end>
    token, projected into the space it shares with images), one 77-token window each."""
    ids = torch.tensor([tokenizer(w) for w in words])  # (W, 77)
    projected = text_encoder(ids).projected
    if projected is None:
        raise InputError("This text encoder has no projection, so its words cannot be placed on the map.")
    return F.normalize(projected.float(), dim=-1)


@torch.no_grad()
def embed_images(image_encoder: ImageEncoder, images: list[Image.Image]) -> Tensor:
    """Pictures -> (I, D) unit vectors, each cropped and resized to IMAGE_SIDE x IMAGE_SIDE first."""
    fitted = [ImageOps.fit(img.convert("RGB"), (IMAGE_SIDE, IMAGE_SIDE), Image.Resampling.LANCZOS) for img in images]
    batch = torch.cat([pil_to_bchw_signed(img) for img in fitted])  # (I, 3, 128, 128) in [-1, 1]
    return F.normalize(image_encoder(batch).float(), dim=-1)


def concept_map(
    models: LessonModels, words: list[str], images: list[Image.Image], image_labels: list[str]
) -> ConceptMap:
    """The words and images on one map: their unit embeddings, cosine similarities, and a 2-D PCA of them all."""
    vectors = []
    if words:
        vectors.append(embed_words(models.text_encoder, models.tokenizer, words))
    if images:
        if models.image_encoder is None:
            raise InputError("The embedded model's image encoder is missing, so images cannot be placed.")
        vectors.append(embed_images(models.image_encoder, images))
    emb = torch.cat(vectors).numpy()  # (N, D), unit rows
    similarity = emb @ emb.T  # (N, N) cosine similarity
    coords, share = pca_2d(emb)
    labels = [*words, *image_labels]
    kinds = ["text"] * len(words) + ["image"] * len(images)
    points = []
    for n, (label, kind) in enumerate(zip(labels, kinds, strict=True)):
        others = [(float(similarity[n, j]), j) for j in range(len(labels)) if j != n]
        best, j = max(others) if others else (1.0, n)
        points.append(ConceptPoint(label, kind, float(coords[n, 0]), float(coords[n, 1]), labels[j], best))
    return ConceptMap(points, share, similarity, emb.shape[1])
