"""The second world (v2): 33 kinds of objects, counts, weather and time of day, more places, plural grammar.

The first world (atelier/world/vocab.py, scene.py, captions.py, splits.py) is what the shipped model was trained
on and what `atelier eval` scores it with; it stays exactly as it was. This package is the world a retrained
model learns from, built on the same ideas (a 3x3 grid, pictograms drawn from parts, supersampled rendering,
captions that come with the spec of what they state) and reusing the first world's pictograms and words:

    vocab.py       the words: kinds with plurals, colours with four French forms, counts, places, time, weather
    pictograms.py  how each kind is drawn, with poses (mirrored, stretched, tilted, alternative drawings)
    splits.py      held-out (kind, colour) pairs: the first world's 15 and 17 among the new kinds
    scene.py       what a scene is (groups of one kind, counted), how it is sampled, drawn and matched to a spec
    captions.py    the English and French grammar: agreement, plurals, numbers, synonyms, word order
    parse.py       a prompt back to the spec of what it names, skipping words the world does not know

`atelier.world.worlds` names both worlds so that training, evaluation and the dataset tools can pick one.
"""
