"""The embedded model's pieces, loaded once for the lessons' tests (lessons/embedded.py, ~10 MB, CPU)."""

import pytest

from atelier.lessons.embedded import LessonModels, load_embedded_models


@pytest.fixture(scope="session")
def embedded() -> LessonModels:
    return load_embedded_models()
