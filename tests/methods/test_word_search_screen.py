"""research/word_search_screen.py: one greedy slot of the discrete word search.

Every candidate text of a sample is scored in one batched pass; the loss of a candidate must be
the loss of that text scored alone, and the choice must be the candidate with the lowest loss
("no word" included), so the screen's recovery figures rest on the right texts.
"""

from __future__ import annotations

import torch
from tiny_model import TinyRefSeg

from wrel.methods.losses import per_sample_seg_loss


def test_candidate_texts_are_sample_major(research_script) -> None:
    screen = research_script("word_search_screen")
    texts = screen.candidate_texts(["ship", "bridge"], ["left", "red"])
    assert texts == ["ship", "ship left", "ship red", "bridge", "bridge left", "bridge red"]


def test_batched_losses_match_single_texts_and_choice_is_the_minimum(research_script) -> None:
    screen = research_script("word_search_screen")
    torch.manual_seed(0)
    model = TinyRefSeg().eval()
    images = torch.randn(3, 3, 16, 16)
    masks = (torch.rand(3, 16, 16) > 0.7).long()
    words = ["left", "red", "small", "upper"]
    texts = screen.candidate_texts(["ship", "bridge", "tank"], words)
    # chunk 4 splits the 15 texts across passes and across samples
    losses = screen.per_sample_losses(model, images, masks, texts, "foreground-mean-smooth1", 4)
    assert losses.shape == (3, len(words) + 1)
    with torch.no_grad():
        for i in range(3):
            for j in range(len(words) + 1):
                ids, att = model.tokenize([texts[i * (len(words) + 1) + j]])
                logits = model(images[i : i + 1], input_ids=ids, attention_mask=att).logits
                alone = per_sample_seg_loss(logits, masks[i : i + 1])[0]
                torch.testing.assert_close(losses[i, j], alone)
    pick = screen.choose(losses)
    assert torch.equal(pick, losses.argmin(dim=1))
    assert bool((losses.gather(1, pick[:, None]) <= losses).all())
