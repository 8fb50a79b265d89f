"""Invariants of the two corruptions (masks.py)."""
import pytest
import torch

from masks import jepa_masks, mlm_corrupt, step_generator

SPECIALS = [0, 1, 2, 3, 4]  # [PAD] [UNK] [CLS] [SEP] [MASK]
MASK, V = 4, 500


def packed_rows(B, T, seed=0):
    g = torch.Generator().manual_seed(seed)
    rows = torch.randint(5, V, (B, T), generator=g)
    rows[:, 0], rows[:, -1] = 2, 3
    rows[:, T // 2] = 3  # a document boundary inside the row
    return rows


def test_mlm_masks_a_fixed_count_of_non_special_positions():
    tokens = packed_rows(64, 128)
    corrupted, pos, labels = mlm_corrupt(tokens, SPECIALS, MASK, V, step_generator(0, 0))
    assert pos.shape == (64, round(0.15 * 126))
    assert (pos.diff(dim=1) > 0).all(), "positions sorted and distinct"
    assert not torch.isin(tokens.gather(1, pos), torch.tensor(SPECIALS)).any()
    assert torch.equal(labels, tokens.gather(1, pos))
    outside = torch.ones_like(tokens, dtype=torch.bool).scatter(1, pos, False)
    assert torch.equal(corrupted[outside], tokens[outside]), "unmasked positions untouched"


def test_mlm_80_10_10_and_random_ids_never_special():
    tokens = packed_rows(2000, 128)
    corrupted, pos, labels = mlm_corrupt(tokens, SPECIALS, MASK, V, step_generator(0, 1))
    new = corrupted.gather(1, pos)
    frac_mask = (new == MASK).float().mean().item()
    frac_kept = (new == labels).float().mean().item()  # includes random draws of the same id
    assert abs(frac_mask - 0.8) < 0.01
    assert abs(frac_kept - 0.1) < 0.01
    replaced = new[(new != MASK) & (new != labels)]
    assert abs(replaced.numel() / new.numel() - 0.1) < 0.01
    assert not torch.isin(replaced, torch.tensor(SPECIALS)).any()


def test_mlm_is_a_pure_function_of_the_seed_and_step():
    tokens = packed_rows(8, 64)
    a = mlm_corrupt(tokens, SPECIALS, MASK, V, step_generator(3, 7))
    b = mlm_corrupt(tokens, SPECIALS, MASK, V, step_generator(3, 7))
    c = mlm_corrupt(tokens, SPECIALS, MASK, V, step_generator(3, 8))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[1], c[1])


@pytest.mark.parametrize("step", range(30))
def test_context_and_targets_never_overlap(step):
    ctx, tgt = jepa_masks(16, 128, step_generator(0, step))
    assert ctx.shape[0] == tgt.shape[0] == 16
    for c, t in zip(ctx.tolist(), tgt.tolist()):
        assert not set(c) & set(t), "the original leaked targets into the context"
        assert min(c + t) >= 1 and max(c + t) <= 126, "[CLS] and [SEP] are never masked"
        assert c == sorted(set(c)) and t == sorted(set(t))


def test_target_spans_sized_from_the_real_row_length():
    """The original sized masks from 512 on 128-token rows; n here is the 126 real tokens."""
    for step in range(200):
        ctx, tgt = jepa_masks(4, 128, step_generator(1, step))
        t_len = tgt.shape[1] // 2
        assert round(0.10 * 126) <= t_len <= round(0.25 * 126)
        assert ctx.shape[1] >= 4
        assert ctx.shape[1] <= round(0.85 * 126)
        for t in tgt.tolist():  # two contiguous spans of t_len (merged when adjacent)
            breaks = [i for i in range(1, len(t)) if t[i] != t[i - 1] + 1]
            assert breaks in ([], [t_len])


def test_index_tensors_have_one_shape_per_batch_and_are_reproducible():
    ctx, tgt = jepa_masks(32, 64, step_generator(2, 0))
    assert ctx.shape[1] >= 4 and tgt.shape[1] % 2 == 0
    again = jepa_masks(32, 64, step_generator(2, 0))
    assert torch.equal(again[0], ctx) and torch.equal(again[1], tgt)


def test_masker_rejects_spans_that_cannot_fit():
    with pytest.raises(ValueError, match="do not fit"):
        jepa_masks(2, 8, step_generator(0, 0), target_scale=(0.5, 0.5))
