"""A deterministic generator of varied prompts for the tokenizer parity tests.

Prompts mix English and French (accents, ligature œ, elisions like "l'été"), other scripts, emoji (with skin tones
and zero-width joiners), punctuation runs, numbers, odd casing, extra whitespace, HTML entities, curly quotes and
ligatures that ftfy repairs, and some long prompts that overflow the 77-token window. No prompt-weighting syntax
is needed here: parity is about plain tokenizing.
"""

from __future__ import annotations

import random


def _words(text: str) -> list[str]:
    return text.split()


ENGLISH = _words(
    "a photo of cat dog portrait landscape painting by greg rutkowski trending on artstation highly detailed "
    "cinematic lighting octane render 8k masterpiece best quality ultra sharp focus bokeh sunset over the ocean "
    "astronaut riding horse mars cyberpunk city at night neon rain reflections watercolor oil canvas studio "
    "ghibli anime girl with blue hair wearing red kimono standing in a field of flowers unreal engine volumetric "
    "fog dramatic sky concept art illustration smooth intricate elegant digital isometric low poly vaporwave "
    "don't it's we're they've i'm you'll he'd CAT'S photorealistic hyperrealistic macro shot 35mm film grain"
)

FRENCH = _words(
    "un chat noir sur le toit été hiver crème brûlée château forêt où élève garçon français à la plage près "
    "de l'océan aujourd'hui cœur sœur œuvre œil naïve noël façade déjà très bientôt fenêtre hôtel côte d'azur "
    "rêve pâtisserie boîte dîner goût août maïs ambiguë Ève ÉCOLE ÇA À Où paysage peint à l'huile lumière douce "
    "jusqu'à qu'il s'il n'est c'était l'été d'automne"
)

OTHER = _words("straße ñandú smørrebrød Ελλάδα москва 東京 猫 고양이 ﬁne café naïve São Paulo Kraków İstanbul")

EMOJI = ["🐱", "🌸", "🔥", "✨", "👩‍🎨", "👍🏽", "🇫🇷", "❤️", "🎨🖌️", "😀😀😀", "☕", "🦄"]

PUNCTUATION = [" - ", *_words(", . ! ? ; : ... -- / \\ \" ' ( ) [ ] { } < > @ # $ % ^ & * + = ~ ` | _ ,, !? « » … — ·")]

NUMBERS = ["1", "42", "1024", "3.14", "8k", "4K", "1girl", "2boys", "1920x1080", "v1.5", "0.75", "2024", "#1", "x2"]

HTML = ["&amp;", "&lt;", "&gt;", "&quot;", "&#39;", "&eacute;", "&nbsp;", "&amp;amp;", "&#233;", "&hellip;", "&copy;"]

FTFY_FIXES = ["“quoted”", "‘single’", "ﬁ", "ﬂower", "ＡＢＣ", "cafÃ©", "Ã©tÃ©", "\u00e9", "e\u0301"]

SPACES = [" ", "  ", "\t", "\n", "   ", " \n ", "\u00a0"]


def _word(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.40:
        word = rng.choice(ENGLISH)
    elif kind < 0.65:
        word = rng.choice(FRENCH)
    elif kind < 0.72:
        word = rng.choice(OTHER)
    elif kind < 0.80:
        word = rng.choice(EMOJI)
    elif kind < 0.88:
        word = rng.choice(NUMBERS)
    elif kind < 0.93:
        word = rng.choice(HTML)
    elif kind < 0.96:
        word = rng.choice(FTFY_FIXES)
    else:
        word = "".join(rng.choice(PUNCTUATION) for _ in range(rng.randint(1, 3)))
    style = rng.random()
    if style < 0.08:
        word = word.upper()
    elif style < 0.16:
        word = word.capitalize()
    elif style < 0.20:
        word = "".join(c.upper() if rng.random() < 0.5 else c for c in word)
    return word


def _separator(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.70:
        return " "
    if r < 0.85:
        return rng.choice([", ", ",", ". ", "; ", " | ", "! "])
    if r < 0.95:
        return rng.choice(SPACES)
    return ""  # glued words: "catdog", "été🔥"


def generate_prompts(count: int = 2000, seed: int = 0) -> list[str]:
    """`count` prompts, always the same ones for the same seed; about 1 in 12 is long (60-160 words)."""
    rng = random.Random(seed)
    prompts = []
    for _ in range(count):
        n_words = rng.randint(60, 160) if rng.random() < 0.08 else rng.randint(0, 18)
        parts = [rng.choice(["", "", "", " ", "  ", "\n"])]
        for i in range(n_words):
            if i:
                parts.append(_separator(rng))
            parts.append(_word(rng))
        parts.append(rng.choice(["", "", "", " ", ".", "  \n"]))
        prompts.append("".join(parts))
    return prompts
