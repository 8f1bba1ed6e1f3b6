"""The lessons: what the lab's page (server/lab.py) and the teaching nodes (graph/teaching.py) show, computed once.

Each module answers one question a workshop asks, as plain functions on the engine's pieces (tokenizer, schedule,
latent, VAE, encoders) that return plain values; the two faces only render them, as JSON for the page or as node
outputs for the editor. Nothing here knows of HTTP or of nodes.

    tokens.py      how a prompt is cut into tokens and 77-position windows
    schedules.py   which sigmas each scheduler visits
    channels.py    a latent's channels as greys, and their statistics
    concepts.py    where words and images sit in the shared text-image space (a 2-D map)
    round_trip.py  what the VAE keeps of an image: encode, decode, measure
    vocabulary.py  what the embedded model can draw, and the prompt words it never read in training
    embedded.py    the embedded model's pieces the lessons need (text encoder, tokenizer, VAE, image encoder)
"""
