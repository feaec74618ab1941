"""research/retrieval_screen.py: the relative (mutual-information) choice.

Each candidate's loss is centred by that text's mean loss over every sample it was scored on
(the class name by its category's mean), so a text that fits every sample equally is no longer
preferred over one that fits this sample better than it fits others.
"""

from __future__ import annotations

import torch


def test_relative_scores_centre_each_text_by_its_own_mean(research_script) -> None:
    screen = research_script("retrieval_screen")
    # 3 samples of one category, K = 2 candidates from a pool of 3 texts; -1 = no candidate
    candidates = torch.tensor([[0, 1], [0, 2], [1, -1]])
    losses = torch.tensor(
        [
            [0.9, 0.2, 0.3],  # class name, text 0, text 1
            [0.7, 0.1, 0.1],  # class name, text 0, text 2
            [0.8, 0.8, 0.8],  # class name, text 1, (none: reads the class name)
        ]
    )
    before = losses.clone()
    out = screen.relative_scores(losses, candidates, ["ship", "ship", "ship"])
    name_mean = (0.9 + 0.7 + 0.8) / 3
    text_mean = {0: (0.2 + 0.1) / 2, 1: (0.3 + 0.8) / 2, 2: 0.1}
    expected = torch.tensor(
        [
            [0.9 - name_mean, 0.2 - text_mean[0], 0.3 - text_mean[1]],
            [0.7 - name_mean, 0.1 - text_mean[0], 0.1 - text_mean[2]],
            [0.8 - name_mean, 0.8 - text_mean[1], 0.8 - name_mean],
        ]
    )
    torch.testing.assert_close(out, expected)
    # text 0 has the lowest raw loss of sample 0 but fits every sample; text 1 fits sample 0
    # far better than it fits the others
    assert int(screen.choose(losses)[0]) == 1
    assert int(screen.choose(out)[0]) == 2
    assert losses.equal(before)  # the input is not modified


def test_class_names_are_centred_per_category(research_script) -> None:
    screen = research_script("retrieval_screen")
    losses = torch.tensor([[0.2, 0.5], [0.4, 0.5], [0.9, 0.5]])
    out = screen.relative_scores(losses, torch.tensor([[0], [0], [1]]), ["a", "a", "b"])
    torch.testing.assert_close(out[:, 0], torch.tensor([-0.1, 0.1, 0.0]))
    counts = screen.scored_per_text(torch.tensor([[0, 1], [0, -1], [0, 1]]))
    assert counts == {"median": 2.0, "min": 2.0, "mean": 2.5}
