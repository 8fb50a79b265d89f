"""Invariants of the two corruptions (masks.py)."""
import pytest
import torch

from masks import jepa_masks, jepa_widths, mlm_corrupt, step_generator

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


def valid_rows(masks_):
    """jepa_masks' four tensors -> per row (context positions, target positions), padding off."""
    ctx, ctx_ok, tgt, tgt_ok = masks_
    return [(c[v].tolist(), t[w].tolist()) for c, v, t, w in zip(ctx, ctx_ok, tgt, tgt_ok)]


def drawn_lengths(seed, step, n, target_scale=(0.10, 0.25), context_scale=(0.65, 0.85)):
    """The step's target-span and context-block lengths, from the generator's first two draws."""
    u = torch.rand(2, generator=step_generator(seed, step)).tolist()
    return (max(1, round((target_scale[0] + u[0] * (target_scale[1] - target_scale[0])) * n)),
            max(1, round((context_scale[0] + u[1] * (context_scale[1] - context_scale[0])) * n)))


@pytest.mark.parametrize("step", range(30))
def test_context_and_targets_never_overlap(step):
    out = jepa_masks(16, 128, step_generator(0, step))
    assert all(x.shape[0] == 16 for x in out)
    for c, t in valid_rows(out):
        assert not set(c) & set(t), "the original leaked targets into the context"
        assert min(c + t) >= 1 and max(c + t) <= 126, "[CLS] and [SEP] are never masked"
        assert c == sorted(set(c)) and t == sorted(set(t))
    assert (out[0][~out[1]] == 0).all() and (out[2][~out[3]] == 0).all(), "padding is position 0"


def test_spans_and_context_follow_the_drawn_lengths():
    """Per step: two contiguous spans of the drawn t (sized from the 126 real tokens: the original
    sized them from 512 on 128-token rows), and in every row exactly c - 2t context tokens, all
    inside one block of the drawn c."""
    for step in range(200):
        out = jepa_masks(4, 128, step_generator(1, step))
        t_len, c_len = drawn_lengths(1, step, 126)
        assert round(0.10 * 126) <= t_len <= round(0.25 * 126)
        assert round(0.65 * 126) <= c_len <= round(0.85 * 126)
        for c, t in valid_rows(out):
            assert len(t) == 2 * t_len and len(c) == c_len - 2 * t_len >= 4
            assert max(c) - min(c) < c_len
            breaks = [i for i in range(1, len(t)) if t[i] != t[i - 1] + 1]
            assert breaks in ([], [t_len])  # merged when adjacent


def test_every_step_has_the_same_shapes_and_a_share_is_a_slice_of_the_whole_batch():
    """Padded to jepa_widths, the index tensors keep one shape for the whole run (torch.compile
    traces once, CUDA graphs can capture the step); a process's rows (rows=) are exactly the
    rows of the one-process batch, though it builds only its own."""
    nc, nt = jepa_widths(64)
    assert (nc, nt) == (round(0.85 * 62) - 2 * round(0.10 * 62), 2 * round(0.25 * 62))
    sizes = set()
    for step in range(20):
        whole = jepa_masks(32, 64, step_generator(2, step))
        assert [tuple(x.shape) for x in whole] == [(32, nc)] * 2 + [(32, nt)] * 2
        sizes.add(int(whole[3][0].sum()))
        share = jepa_masks(8, 64, step_generator(2, step), rows=(8, 32))
        assert all(torch.equal(a, b[8:16]) for a, b in zip(share, whole))
        again = jepa_masks(32, 64, step_generator(2, step))
        assert all(torch.equal(a, b) for a, b in zip(again, whole))
    assert len(sizes) > 5, "the target length is drawn per step"


def test_masker_rejects_spans_or_contexts_that_cannot_fit():
    with pytest.raises(ValueError, match="do not fit"):
        jepa_masks(2, 8, step_generator(0, 0), target_scale=(0.5, 0.5))
    with pytest.raises(ValueError, match="keeps fewer than 4 of 14 tokens"):
        jepa_widths(16)  # a block of 9 minus two spans of 4
