"""lessons/concepts.py: words and pictures on one map, with the embedded model's text and image encoders."""

import numpy as np
import pytest
import torch

from atelier.errors import InputError
from atelier.lessons.concepts import concept_map, embed_images, embed_words, pca_2d
from atelier.lessons.embedded import LessonModels
from tests.lessons.scenes import scene


def test_pca_of_points_on_a_line_and_in_a_plane():
    line = np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 2.0], [2.0, 4.0, 4.0]])
    coords, share = pca_2d(line)
    assert share == pytest.approx([1.0, 0.0])
    assert np.abs(coords[:, 0]).tolist() == pytest.approx([3.0, 0.0, 3.0]) and coords[:, 1] == pytest.approx(0)
    square = np.array([[0.0, 0.0, 5.0], [2.0, 0.0, 5.0], [0.0, 1.0, 5.0], [2.0, 1.0, 5.0]])
    coords, share = pca_2d(square)
    assert share == pytest.approx([0.8, 0.2])  # variance 1 along x, 0.25 along y
    assert np.allclose(np.abs(coords), [[1.0, 0.5]] * 4)
    coords, share = pca_2d(np.ones((1, 4)))  # one point: no spread, nothing to divide by
    assert coords.shape == (1, 2) and share == [0.0, 0.0]


def test_words_and_their_translations_are_neighbours(embedded):
    words = ["red", "rouge", "blue", "bleu", "circle", "star"]
    concepts = concept_map(embedded, words, [], [])
    nearest = {p.label: p.nearest for p in concepts.points}
    assert nearest["red"] == "rouge" and nearest["rouge"] == "red" and nearest["blue"] == "bleu"
    assert concepts.dim == 128 and concepts.similarity.shape == (6, 6)
    assert np.diag(concepts.similarity) == pytest.approx(1, abs=1e-5)
    assert concepts.points[0].nearest_similarity == pytest.approx(concepts.similarity[0, 1])
    assert concepts.similarity[0, 1] > 0.9 and concepts.similarity[0, 2] < concepts.similarity[0, 1]
    assert 0 < concepts.explained[1] <= concepts.explained[0] < 1


def test_a_picture_lands_next_to_its_caption(embedded):
    captions = ["a red circle on the left", "a blue circle on the left", "red", "blue"]
    pictures = [scene((220, 30, 30)), scene((30, 30, 220))]
    concepts = concept_map(embedded, captions, pictures, ["red disc", "blue disc"])
    assert [(p.label, p.kind) for p in concepts.points][-3:] == [
        ("blue", "text"),
        ("red disc", "image"),
        ("blue disc", "image"),
    ]
    nearest = {p.label: p.nearest for p in concepts.points}
    assert nearest["red disc"] == "a red circle on the left" and nearest["blue disc"] == "a blue circle on the left"


def test_embeddings_are_unit_vectors_and_any_picture_size_is_fitted(embedded):
    words = embed_words(embedded.text_encoder, embedded.tokenizer, ["red", "a star"])
    images = embed_images(embedded.image_encoder, [scene((220, 30, 30), 200), scene((220, 30, 30), 128)])
    assert words.shape == images.shape == (2, 128)
    assert torch.linalg.vector_norm(torch.cat([words, images]), dim=-1) == pytest.approx(1, abs=1e-5)
    assert float(images[0] @ images[1]) > 0.95  # the same scene at 200x200 and at 128x128


def test_images_need_the_image_encoder(embedded):
    without = LessonModels(embedded.text_encoder, embedded.tokenizer, embedded.vae, None)
    with pytest.raises(InputError, match=r"^The embedded model's image encoder is missing"):
        concept_map(without, ["red"], [scene((220, 30, 30))], ["disc"])
