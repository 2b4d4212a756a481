"""A tiny indexed folder of facts (names, numbers, years) for the `ragapp eval` tests, with the fake embedder."""

import pytest
from conftest import FakeEmbedder, write_files

DOCS = {
    "normans.md": "The Normans gave their name to Normandy, a region in France. Rollo was the first ruler of Normandy "
                  "in 911. The Norman conquest of England began in 1066 under William the Conqueror.",
    "cats.txt": "Cats sleep about 16 hours a day, kittens even longer. A cat has 30 teeth as an adult. The Egyptian Mau "
                "is one of the oldest breeds of domestic cat.",
    "release.md": "The release of version 2 is planned for 2025 in Berlin. About 45% of the users upgraded within a "
                  "month. The team of Alice Smith wrote 12 modules for it.",
    "rivers.txt": "The Danube flows through 10 countries before reaching the Black Sea. The Rhine rises in the Swiss Alps "
                  "and ends in the North Sea near Rotterdam.",
    "space.md": "Apollo 11 landed on the Moon in 1969 with Neil Armstrong. The Hubble telescope was launched in 1990 by "
                "the shuttle Discovery.",
}


@pytest.fixture
def facts(tmp_path, tokenizer):
    """(index name, index folder, embedder) of DOCS indexed."""
    from ragapp.index.index import Index

    emb = FakeEmbedder(tokenizer, dim=256)
    write_files(tmp_path / "docs", DOCS)
    with Index.create("facts", tmp_path / "indexes", embedder=emb) as idx:
        idx.sync(tmp_path / "docs", embedder=emb, progress=False, workers=0)
    return "facts", tmp_path / "indexes", emb
