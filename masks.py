"""The two corruptions of a packed row: MLM masking and the JEPA context/target spans.

Both are pure functions of a torch.Generator, which train.py seeds from (seed, step): a batch's
masks are reproducible from the step alone, so resuming needs no masker state. Rows are packed
`[CLS] t1 ... t_{T-2} [SEP]` (see data.py), so every row has the same n = T-2 maskable positions
and every index tensor below has one shape for the whole run (what torch.compile and CUDA
graphs need).
"""
import numpy as np
import torch
import torch.nn.functional as F


def step_generator(seed: int, step: int, stream: int = 0) -> torch.Generator:
    """An independent generator per (seed, step, stream): SeedSequence mixes the three integers so
    neighbouring steps or seeds do not get correlated streams."""
    state = np.random.SeedSequence([seed, step, stream]).generate_state(2, dtype=np.uint64)
    return torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))


def mlm_corrupt(tokens, special_ids, mask_id: int, vocab_size: int, gen, mask_prob: float = 0.15,
                rows: tuple[int, int] | None = None):
    """BERT corruption: mask_prob of the non-special positions of each row are chosen; of those
    80% become [MASK], 10% a random non-special id, 10% stay. The same count is chosen in every
    row (round(mask_prob * (T-2))) so the sparse MLM head sees a static (B, M) shape.

    tokens: (B, T) int64; rows = (lo, n) when they are rows lo:lo+B of a batch of n rows (one
    process's share): the draws are made for all n rows and these B kept, so the share is exactly
    that slice of the whole batch's corruption. Returns corrupted (B, T), mlm_pos (B, M) sorted,
    mlm_labels (B, M).
    """
    B, T = tokens.shape
    lo, n = rows or (0, B)
    n_mask = max(1, round(mask_prob * (T - 2)))
    specials = torch.tensor(sorted(special_ids), dtype=tokens.dtype)
    is_special = torch.isin(tokens, specials)
    if int((~is_special).sum(1).min()) < n_mask:
        raise ValueError(f"a row has fewer than {n_mask} non-special tokens to mask")
    scores = torch.rand(n, T, generator=gen)[lo:lo + B]
    scores = scores.masked_fill(is_special, 2.0)  # specials are never chosen
    mlm_pos = scores.topk(n_mask, dim=1, largest=False).indices.sort(dim=1).values
    mlm_labels = tokens.gather(1, mlm_pos)
    # random replacements are drawn from the non-special ids only
    normal_ids = torch.ones(vocab_size, dtype=torch.bool)
    normal_ids[specials] = False
    normal_ids = normal_ids.nonzero().squeeze(1)
    random_ids = normal_ids[torch.randint(len(normal_ids), (n, n_mask), generator=gen)[lo:lo + B]]
    action = torch.rand(n, n_mask, generator=gen)[lo:lo + B]
    new = torch.where(action < 0.8, torch.full_like(mlm_labels, mask_id),
                      torch.where(action < 0.9, random_ids, mlm_labels))
    corrupted = tokens.scatter(1, mlm_pos, new)
    return corrupted, mlm_pos, mlm_labels


def _span(u: float, scale, n: int) -> int:
    """A length drawn at u in [0, 1) between scale[0]*n and scale[1]*n, rounded, at least 1."""
    return max(1, round((scale[0] + u * (scale[1] - scale[0])) * n))


def jepa_widths(seq_len: int, target_scale=(0.10, 0.25), context_scale=(0.65, 0.85),
                num_targets: int = 2, min_keep: int = 4) -> tuple[int, int]:
    """(Nc, Nt): the widths jepa_masks pads its index tensors to, the largest context and target
    sets these scales can draw. ValueError where some draw cannot fit in the n = seq_len-2
    tokens."""
    n = seq_len - 2
    t_lo, t_hi = (_span(u, target_scale, n) for u in (0, 1))
    c_lo, c_hi = (min(n, _span(u, context_scale, n)) for u in (0, 1))
    if num_targets * t_hi >= n:
        raise ValueError(f"{num_targets} target spans of {t_hi} do not fit in {n} tokens")
    if c_lo - num_targets * t_hi < max(1, min_keep):
        raise ValueError(f"a context block of {c_lo} minus {num_targets} target spans of {t_hi} "
                         f"keeps fewer than {max(1, min_keep)} of {n} tokens: raise "
                         "context_scale or lower target_scale or min_keep")
    return c_hi - num_targets * t_lo, num_targets * t_hi


def jepa_masks(batch_size: int, seq_len: int, gen, target_scale=(0.10, 0.25),
               context_scale=(0.65, 0.85), num_targets: int = 2, min_keep: int = 4,
               rows: tuple[int, int] | None = None):
    """I-JEPA multi-block masking in 1-D, in shapes that are the same at every step.

    Per step one target-span length t and one context-block length c are drawn; per row
    `num_targets` non-overlapping spans of t and one block of c are placed uniformly. The context
    is the block minus every target (disjoint: the original leaked most targets into the context),
    randomly subsampled to c - num_targets*t tokens, a count every row has whatever the placement
    (in the tiny preset's 128-row batch it is exactly the batch minimum the context was once cut
    to, in 300 of 300 steps). Positions exclude [CLS] (0) and [SEP] (T-1).

    The index tensors are padded to jepa_widths (Nc, Nt) with position 0 and come with validity
    masks, so torch.compile and CUDA graphs see one shape for the whole run. rows = (lo, n): this
    is rows lo:lo+B of a batch of n, drawn as in mlm_corrupt (only these rows are built).

    Returns context_idx (B, Nc), context_valid (B, Nc), target_idx (B, Nt), target_valid (B, Nt):
    the valid entries first and sorted; the valid counts are the same in every row.
    """
    B, (lo, total) = batch_size, rows or (0, batch_size)
    nc, nt = jepa_widths(seq_len, target_scale, context_scale, num_targets, min_keep)
    n = seq_len - 2
    u = torch.rand(2, generator=gen).tolist()
    t_len, c_len = _span(u[0], target_scale, n), min(n, _span(u[1], context_scale, n))
    # Non-overlapping spans, uniform over placements: sorted offsets into the free length,
    # then shift the k-th span right by the k spans before it.
    free = n - num_targets * t_len
    starts = torch.randint(free + 1, (total, num_targets), generator=gen)[lo:lo + B].sort(1).values
    starts = starts + torch.arange(num_targets) * t_len
    target_idx = (starts[:, :, None] + torch.arange(t_len)).flatten(1)  # (B, k*t), sorted
    is_target = torch.zeros(B, n, dtype=torch.bool).scatter_(1, target_idx, True)
    block_start = torch.randint(n - c_len + 1, (total, 1), generator=gen)[lo:lo + B]
    pos = torch.arange(n)
    context = (pos >= block_start) & (pos < block_start + c_len) & ~is_target
    keep = c_len - num_targets * t_len  # <= context.sum(1) in every row
    scores = torch.rand(total, n, generator=gen)[lo:lo + B].masked_fill(~context, 2.0)
    context_idx = scores.topk(keep, dim=1, largest=False).indices.sort(1).values

    def padded(idx, width):
        valid = torch.arange(width).expand(B, width) < idx.shape[1]
        return F.pad(idx + 1, (0, width - idx.shape[1])), valid
    return (*padded(context_idx, nc), *padded(target_idx, nt))
