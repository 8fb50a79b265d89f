"""The model's invariants: attention, padding, predictor, EMA, sparse MLM head, lambda, FLOPs."""
import math

import pytest
import torch
import torch.nn.functional as F
import torch.utils.flop_counter as fc

import model
from masks import jepa_masks, mlm_corrupt, step_generator

V = 300


def tiny(mode="hybrid", **kw):
    cfg = model.ModelConfig(vocab_size=V, seq_len=32, d_model=32, n_layers=2, n_heads=4,
                        pred_dim=16, pred_depth=2, mode=mode, **kw)
    torch.manual_seed(0)
    return model.PredictReconstruct(cfg)


def batch(B=4, T=32, step=0):
    g = torch.Generator().manual_seed(step)
    tokens = torch.randint(5, V, (B, T), generator=g)
    tokens[:, 0], tokens[:, -1] = 2, 3
    corrupted, pos, labels = mlm_corrupt(tokens, [0, 1, 2, 3, 4], 4, V, step_generator(0, step))
    return dict(tokens=tokens, corrupted=corrupted, mlm_pos=pos, mlm_labels=labels,
                **dict(zip(model.JEPA_MASKS, jepa_masks(B, T, step_generator(0, step, 1)))))


def naive_attention(block, x, pad_mask=None):
    B, T, d = x.shape
    H = block.n_heads
    q, k, v = block.qkv(block.ln1(x)).split(d, dim=-1)
    q, k, v = (t.view(B, T, H, d // H).transpose(1, 2) for t in (q, k, v))
    scores = q @ k.transpose(-1, -2) / math.sqrt(d // H)
    if pad_mask is not None:
        scores = scores.masked_fill(~pad_mask[:, None, None, :], float("-inf"))
    y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, d)
    x = x + block.proj(y)
    return x + block.fc2(F.gelu(block.fc1(block.ln2(x))))


@pytest.mark.parametrize("masked", [False, True])
def test_attention_equals_naive_softmax_reference(masked):
    torch.manual_seed(0)
    block = model.Block(32, 4)
    x = torch.randn(3, 10, 32)
    pad = torch.arange(10) < torch.tensor([10, 7, 3])[:, None] if masked else None
    ours = block(x, None if pad is None else pad[:, None, None, :])
    ref = naive_attention(block, x, pad)
    if masked:
        assert torch.allclose(ours[pad], ref[pad], atol=1e-5)
    else:
        assert torch.allclose(ours, ref, atol=1e-5)


def test_padding_never_changes_real_positions():
    enc = tiny().encoder.eval()
    ids = torch.randint(5, V, (1, 9))
    alone = enc(ids)
    padded = torch.cat([ids, torch.zeros(1, 6, dtype=torch.long)], 1)
    mask = torch.arange(15)[None] < 9
    out = enc(torch.cat([padded, torch.randint(5, V, (1, 15))]), pad_mask=torch.cat(
        [mask, torch.ones_like(mask)]))
    assert torch.allclose(out[0, :9], alone[0], atol=1e-5)


def test_predictor_returns_exactly_the_target_positions():
    m = tiny()
    b = batch()
    z = torch.randn(4, b["context_idx"].shape[1], 32)
    valid = torch.cat([b["context_valid"], b["target_valid"]], 1)
    pred = m.predictor(z, b["context_idx"], b["target_idx"], valid)
    assert pred.shape == (4, b["target_idx"].shape[1], 32)
    perm = torch.randperm(b["target_idx"].shape[1])  # output j belongs to target_idx[:, j]
    nc = b["context_idx"].shape[1]
    pred_perm = m.predictor(z, b["context_idx"], b["target_idx"][:, perm],
                            torch.cat([b["context_valid"], b["target_valid"][:, perm]], 1))
    assert torch.allclose(pred_perm, pred[:, perm], atol=1e-5)
    assert valid[:, nc:].any() and not valid[:, nc:].all(), "some targets are padding here"


@pytest.mark.parametrize("step", range(3))
def test_the_jepa_masks_padding_changes_nothing(step):
    """The JEPA loss on the padded masks equals the loss on the same masks cut to their valid
    entries (no padding, no attention mask): padding is invisible to the context encoder, the
    predictor and the loss, whatever the padded positions hold."""
    m = tiny()
    b = batch(step=step)
    nc, nt = (int(b[k][0].sum()) for k in ("context_valid", "target_valid"))
    assert nc < b["context_idx"].shape[1] and nt < b["target_idx"].shape[1]
    cut = dict(context_idx=b["context_idx"][:, :nc], context_valid=b["context_valid"][:, :nc],
               target_idx=b["target_idx"][:, :nt], target_valid=b["target_valid"][:, :nt])
    scrambled = dict(b, context_idx=b["context_idx"].masked_fill(~b["context_valid"], 7),
                     target_idx=b["target_idx"].masked_fill(~b["target_valid"], 5))
    loss = m.loss_jepa(b["tokens"], b["corrupted"], *(b[k] for k in model.JEPA_MASKS))
    for other in (cut, scrambled):
        again = m.loss_jepa(b["tokens"], b["corrupted"], *(dict(b, **other)[k]
                                                           for k in model.JEPA_MASKS))
        assert torch.allclose(again, loss, atol=1e-6)


def test_gradients_reach_encoder_and_predictor_never_the_target():
    m = tiny()
    before = {k: v.clone() for k, v in m.target_encoder.state_dict().items()}
    loss, _ = m(batch())
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.encoder.parameters()
               if p is not m.encoder.pos_emb.weight)
    assert all(p.grad is not None for p in m.predictor.parameters())
    assert all(p.grad is None and not p.requires_grad for p in m.target_encoder.parameters())
    torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=1.0).step()
    after = m.target_encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "target moved by backward"
    assert not torch.equal(m.encoder.tok_emb.weight, m.target_encoder.tok_emb.weight)


def test_ema_update_equals_its_formula():
    m = tiny()
    with torch.no_grad():
        for p in m.encoder.parameters():
            p.add_(torch.randn_like(p))
    t0 = [p.clone() for p in m.target_encoder.parameters()]
    model.ema_update(m.target_encoder, m.encoder, 0.99)
    for t_old, t_new, o in zip(t0, m.target_encoder.parameters(), m.encoder.parameters()):
        assert torch.allclose(t_new, 0.99 * t_old + 0.01 * o, atol=1e-6)


def test_sparse_mlm_head_gives_the_dense_loss():
    m = tiny("mlm")
    b = batch()
    sparse = m.loss_mlm(b["corrupted"], b["mlm_pos"], b["mlm_labels"])
    logits = m.mlm_head(m.encoder(b["corrupted"]), m.encoder.tok_emb.weight)  # all positions
    labels = torch.full_like(b["tokens"], -100).scatter(1, b["mlm_pos"], b["mlm_labels"])
    dense = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
    assert torch.allclose(sparse, dense, atol=1e-5)


def test_modes_build_only_what_they_train():
    assert tiny("mlm").predictor is None and tiny("mlm").target_encoder is None
    assert tiny("jepa").mlm_head is None
    _, stats = tiny("jepa")(batch())
    assert "loss_mlm" not in stats and stats["lam"] == 1.0
    _, stats = tiny("mlm")(batch())
    assert "loss_jepa" not in stats and stats["lam"] == 0.0


def test_lambda_modes():
    m = tiny()
    loss, s = m(batch())
    assert s["lam"] == 0.5, "sigmoid(0)"
    assert torch.allclose(loss, 0.5 * s["loss_jepa"] + 0.5 * s["loss_mlm"])
    m = tiny(lambda_mode="fixed:0.3")
    loss, s = m(batch())
    assert not any(n == "w" for n, _ in m.named_parameters())
    assert torch.allclose(loss, 0.3 * s["loss_jepa"] + 0.7 * s["loss_mlm"])
    m = tiny(lambda_mode="uncertainty")
    with torch.no_grad():
        m.log_sigma.copy_(torch.tensor([0.5, -0.2]))
    loss, s = m(batch())
    expect = (s["loss_jepa"] / (2 * math.exp(1.0)) + s["loss_mlm"] / (2 * math.exp(-0.4))
              + 0.3)
    assert torch.allclose(loss, expect, atol=1e-5)
    for bad in ("fixed:1.5", "fixed:x", "sigmoid", "learned:1"):
        with pytest.raises(ValueError, match="lambda_mode"):
            model.parse_lambda_mode(bad)


def _counted_flops(m, b):
    counter = fc.FlopCounterMode(display=False)
    with counter:
        loss, _ = m(b)
        loss.backward()
    return counter.get_total_flops()


@pytest.mark.parametrize("mode", model.MODES)
def test_analytic_flops_equal_a_flop_counter_exactly(mode):
    """step_flops equals FlopCounterMode's count of a CPU training step to the FLOP.

    Both count the same matmuls: every nn.Linear (encoder QKV, proj, fc1, fc2; the predictor's
    blocks and its in/out projections; the MLM head's dense layer), the tied MLM decoder
    (F.linear over the token embedding) and attention's QK^T and AV (model.attention, written
    out on the CPU: two batched matmuls). Neither counts embedding lookups, norms, GELU, softmax,
    the losses or bias additions (the counter counts only mm/addmm/bmm/conv/SDPA). Each matmul's
    backward is two matmuls of its size (grad of input, of weight), so trained passes cost 3x
    forward in both; the target encoder runs forward only in both. (On a GPU, SDPA's flash
    backward also recomputes QK^T: half the forward attention FLOPs more than counted here.)"""
    cfg = model.ModelConfig(vocab_size=2000, seq_len=64, d_model=64, n_layers=2, n_heads=4,
                        pred_dim=32, pred_depth=2, mode=mode)
    m = model.PredictReconstruct(cfg)
    b = batch(B=4, T=64)
    b["mlm_labels"] = b["mlm_labels"] % 2000
    # the executed sizes: the JEPA masks padded to their fixed widths
    n_ctx, n_tgt, n_mlm = (b[k].shape[1] for k in ("context_idx", "target_idx", "mlm_pos"))
    assert _counted_flops(m, b) == model.step_flops(cfg, 4, n_ctx, n_tgt, n_mlm) > 0


@pytest.mark.parametrize("mode, lambda_mode", [("hybrid", "learned"), ("hybrid", "fixed:0.3"),
                                               ("hybrid", "uncertainty"), ("mlm", "learned"),
                                               ("jepa", "learned")])
def test_every_stat_lives_on_the_model_device(mode, lambda_mode):
    """The meta device stands in for a GPU: a stat made on the CPU (a bare torch.tensor) would
    crash the NCCL all-reduce of the log step under torchrun."""
    with torch.device("meta"):
        net = tiny(mode, lambda_mode=lambda_mode)
    assert {p.device.type for p in net.parameters()} == {"meta"}
    loss, stats = net({k: v.to("meta") for k, v in batch().items()})
    assert loss.device.type == "meta"
    assert {k: v.device.type for k, v in stats.items()} == {k: "meta" for k in stats}
    assert {"loss", "lam"} <= set(stats)
