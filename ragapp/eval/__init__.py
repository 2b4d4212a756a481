"""Evaluation of retrieval and answers (SQuAD 2.0, BEIR). May import answer and every stage below it."""
