"""The procedural bilingual world the embedded model is trained on, and its training and evaluation."""
