"""The two corruptions of a packed row: MLM masking and the JEPA context/target spans.

Both are pure functions of a torch.Generator, which train.py seeds from (seed, step): a batch's
masks are reproducible from the step alone, so resuming needs no masker state. Rows are packed
`[CLS] t1 ... t_{T-2} [SEP]` (see data.py), so every row has the same n = T-2 maskable positions
and every index tensor below has one static shape per batch (what torch.compile needs).
"""
import numpy as np
import torch


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


def jepa_masks(batch_size: int, seq_len: int, gen, target_scale=(0.10, 0.25),
               context_scale=(0.65, 0.85), num_targets: int = 2, min_keep: int = 4):
    """I-JEPA multi-block masking in 1-D.

    Per batch one target-span length and one context-block length are drawn (so shapes agree
    across rows); per row `num_targets` non-overlapping target spans and one context block are
    placed uniformly. The context is the block minus every target position, so context and
    targets are disjoint (the original code leaked most targets into the context). Context sets
    differ in size across rows; each is randomly subsampled to the batch minimum so they stack.
    Positions exclude [CLS] (0) and [SEP] (T-1).

    Returns context_idx (B, Nc) and target_idx (B, Nt), both sorted, int64.
    """
    n = seq_len - 2
    u = torch.rand(2, generator=gen).tolist()
    t_len = max(1, round((target_scale[0] + u[0] * (target_scale[1] - target_scale[0])) * n))
    c_len = max(1, round((context_scale[0] + u[1] * (context_scale[1] - context_scale[0])) * n))
    if num_targets * t_len >= n:
        raise ValueError(f"{num_targets} target spans of {t_len} do not fit in {n} tokens")
    c_len = min(c_len, n)
    # Non-overlapping spans, uniform over placements: sorted offsets into the free length,
    # then shift the k-th span right by the k spans before it.
    free = n - num_targets * t_len
    starts = torch.randint(free + 1, (batch_size, num_targets), generator=gen).sort(1).values
    starts = starts + torch.arange(num_targets) * t_len
    target_idx = (starts[:, :, None] + torch.arange(t_len)).flatten(1)  # (B, Nt), sorted
    is_target = torch.zeros(batch_size, n, dtype=torch.bool).scatter_(1, target_idx, True)

    pos = torch.arange(n)
    context = torch.zeros(batch_size, n, dtype=torch.bool)
    todo = torch.ones(batch_size, dtype=torch.bool)
    for _ in range(20):  # re-place the block where it lands mostly on targets
        block_start = torch.randint(n - c_len + 1, (batch_size, 1), generator=gen)
        block = (pos >= block_start) & (pos < block_start + c_len)
        context = torch.where(todo[:, None], block & ~is_target, context)
        todo = context.sum(1) < min_keep
        if not todo.any():
            break
    else:
        raise ValueError(f"could not keep {min_keep} context tokens next to {num_targets} "
                         f"targets of {t_len} in {n} tokens")
    keep = int(context.sum(1).min())
    scores = torch.rand(batch_size, n, generator=gen).masked_fill(~context, 2.0)
    context_idx = scores.topk(keep, dim=1, largest=False).indices.sort(1).values
    return context_idx + 1, target_idx + 1
