"""The model: a pre-LN transformer encoder, the JEPA predictor, the MLM head, the EMA target
encoder, and the three objectives (hybrid, mlm, jepa) computed from one batch.

Read top to bottom: Block -> Encoder -> Predictor -> MLMHead -> PredictReconstruct (forward, the
two losses, their mix by lam; our lambda variants after them) -> FLOPs -> loading a trained
encoder for probes.
"""
import copy
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

MODES = ("hybrid", "mlm", "jepa")
JEPA_MASKS = ("context_idx", "context_valid", "target_idx", "target_valid")  # masks.jepa_masks


@dataclass
class ModelConfig:
    vocab_size: int = 30522
    seq_len: int = 128
    d_model: int = 256
    n_layers: int = 4
    n_heads: int = 4
    pred_dim: int = 128
    pred_depth: int = 2
    mode: str = "hybrid"              # hybrid | mlm | jepa
    lambda_mode: str = "learned"      # learned | fixed:<v> | uncertainty | balanced[:<tau>]
    jepa_context: str = "corrupted"   # corrupted (the original's) | clean (ablation)


def attention(q, k, v, attn_mask=None):
    """softmax(q k^T / sqrt(d_head)) v over the keys attn_mask keeps (True: a real token). On the
    CPU written out, so that torch.compile fuses it: at the tiny preset's 64 positions and 32-wide
    heads, SDPA's CPU flash kernel took 36-45% of a training step, and the step is 1.5-2x faster
    so (docs/performance.md). On a GPU, SDPA (flash or memory-efficient kernels)."""
    if q.device.type != "cpu":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
    scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5  # (B, H, T, T)
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf"))
    return scores.softmax(-1) @ v


class Block(nn.Module):
    """Pre-LN transformer block: x + attn(LN(x)), then x + MLP(LN(x)). One fused QKV matmul."""

    def __init__(self, d: int, n_heads: int):
        super().__init__()
        assert d % n_heads == 0, f"d_model {d} is not divisible by n_heads {n_heads}"
        self.n_heads = n_heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x, attn_mask=None):
        # x: (B, T, d); attn_mask: (B, 1, 1, T) bool, True where the key is a real token
        B, T, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, self.n_heads, d // self.n_heads).unbind(2)
        y = attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask)
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, d))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


def _attn_mask(pad_mask):
    return None if pad_mask is None else pad_mask[:, None, None, :]


class Encoder(nn.Module):
    """Token + learned position embeddings, blocks, final LN. `pos` lets the JEPA context
    encoder run on a subset of tokens while keeping their original positions."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_emb = nn.Embedding(cfg.seq_len, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg.d_model, cfg.n_heads) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)

    def forward(self, ids, pos=None, pad_mask=None):
        # ids, pos: (B, N) token ids and their positions; pad_mask: (B, N) True = real token
        pe = self.pos_emb.weight[: ids.shape[1]] if pos is None else self.pos_emb(pos)
        x = self.tok_emb(ids) + pe
        mask = _attn_mask(pad_mask)
        for block in self.blocks:
            x = block(x, mask)
        return self.ln_f(x)  # (B, N, d)


class Predictor(nn.Module):
    """Narrow transformer that guesses target-token latents from the context latents: context
    projected to pred_dim + positions, then one learned mask token (+ its position) per target."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        p = cfg.pred_dim
        self.in_proj, self.out_proj = nn.Linear(cfg.d_model, p), nn.Linear(p, cfg.d_model)
        self.pos_emb = nn.Embedding(cfg.seq_len, p)
        self.mask_token = nn.Parameter(torch.zeros(p))
        self.blocks = nn.ModuleList(Block(p, cfg.n_heads) for _ in range(cfg.pred_depth))
        self.ln = nn.LayerNorm(p)

    def forward(self, z, context_idx, target_idx, valid=None):
        # z: (B, Nc, d) context latents; context_idx (B, Nc), target_idx (B, Nt) positions;
        # valid: (B, Nc + Nt) True = a real context token or target (masks.jepa_masks pads both)
        x = self.in_proj(z) + self.pos_emb(context_idx)
        m = self.mask_token + self.pos_emb(target_idx)  # (B, Nt, p)
        x = torch.cat([x, m], dim=1)
        mask = _attn_mask(valid)
        for block in self.blocks:
            x = block(x, mask)
        return self.out_proj(self.ln(x[:, context_idx.shape[1]:]))  # (B, Nt, d)


class MLMHead(nn.Module):
    """BERT's head: dense, GELU, LN, then a decoder tied to the token embedding. Called only on
    the masked positions (sparse prediction): the V-wide matmul is the most expensive one."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.dense, self.ln = nn.Linear(cfg.d_model, cfg.d_model), nn.LayerNorm(cfg.d_model)
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size))

    def forward(self, h, tok_emb_weight):
        return F.linear(self.ln(F.gelu(self.dense(h))), tok_emb_weight, self.bias)


def gather_tokens(x, idx):
    """x: (B, T, d), idx: (B, N) -> (B, N, d)."""
    return x.gather(1, idx[:, :, None].expand(-1, -1, x.shape[-1]))


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float):
    """target <- momentum * target + (1 - momentum) * online, in one fused op."""
    torch._foreach_lerp_(list(target.parameters()), list(online.parameters()), 1.0 - momentum)


class PredictReconstruct(nn.Module):
    """One shared encoder trained by L = lam * L_JEPA + (1 - lam) * L_MLM (mode hybrid), or by
    either loss alone (mode mlm / jepa). forward(batch) -> (loss, stats)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.mode not in MODES:
            raise ValueError(f"mode {cfg.mode!r}: expected one of {', '.join(MODES)}")
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.target_encoder = self.predictor = self.mlm_head = None
        if cfg.mode != "mlm":
            self.predictor = Predictor(cfg)
        if cfg.mode != "jepa":
            self.mlm_head = MLMHead(cfg)
        self.lambda_kind, value = parse_lambda_mode(cfg.lambda_mode)
        self.lam_fixed = value if self.lambda_kind == "fixed" else None
        self.balance_tau = value if self.lambda_kind == "balanced" else None
        self.balanced = cfg.mode == "hybrid" and self.lambda_kind == "balanced"
        if cfg.mode == "hybrid" and self.lambda_kind in ("learned", "balanced"):
            self.w = nn.Parameter(torch.zeros(()))  # lam = sigmoid(w) = 0.5 at the start
        if cfg.mode == "hybrid" and self.lambda_kind == "uncertainty":
            self.log_sigma = nn.Parameter(torch.zeros(2))  # (log s_JEPA, log s_MLM)
        if self.balanced:  # (L_JEPA, L_MLM) of the first step; 0 = not measured yet
            self.register_buffer("loss_init", torch.zeros(2))
        self.apply(self._init)
        if cfg.mode != "mlm":  # target starts as an exact copy of the online encoder
            self.target_encoder = copy.deepcopy(self.encoder).requires_grad_(False)

    @staticmethod
    def _init(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)
        if isinstance(m, (Encoder, Predictor)):  # GPT-2: residual projections scaled by depth
            for block in m.blocks:
                for w in (block.proj.weight, block.fc2.weight):
                    nn.init.normal_(w, std=0.02 / math.sqrt(2 * len(m.blocks)))

    def forward(self, batch):
        """batch: tokens (clean rows), corrupted, mlm_pos, mlm_labels, and the JEPA masks
        context_idx, context_valid, target_idx, target_valid (masks.jepa_masks)."""
        stats = {}
        if self.mlm_head is not None:
            stats["loss_mlm"] = self.loss_mlm(batch["corrupted"], batch["mlm_pos"],
                                              batch["mlm_labels"])
        if self.predictor is not None:
            stats["loss_jepa"] = self.loss_jepa(batch["tokens"], batch["corrupted"],
                                                *(batch[k] for k in JEPA_MASKS))
        if self.cfg.mode == "mlm":
            loss = stats["loss_mlm"]
        elif self.cfg.mode == "jepa":
            loss = stats["loss_jepa"]
        else:
            loss, mixed = self.mix(stats["loss_jepa"], stats["loss_mlm"])
            stats.update(mixed)
        stats["loss"] = loss
        stats.setdefault("lam", self.lam())
        return loss, {k: v.detach() for k, v in stats.items()}

    def loss_mlm(self, corrupted, mlm_pos, mlm_labels):
        h = gather_tokens(self.encoder(corrupted), mlm_pos)  # (B, M, d): only masked positions
        logits = self.mlm_head(h, self.encoder.tok_emb.weight)
        return F.cross_entropy(logits.flatten(0, 1).float(), mlm_labels.flatten())

    def loss_jepa(self, tokens, corrupted, context_idx, context_valid, target_idx, target_valid):
        """1 - cos(prediction, target latent), averaged over the real targets; the padding of the
        context and of the targets is masked out of every attention."""
        with torch.no_grad():  # targets: the EMA encoder on the clean row, LN without affine
            h = self.target_encoder(tokens)
            targets = gather_tokens(F.layer_norm(h.float(), h.shape[-1:]), target_idx)
        source = corrupted if self.cfg.jepa_context == "corrupted" else tokens
        z = self.encoder(source.gather(1, context_idx), pos=context_idx, pad_mask=context_valid)
        valid = torch.cat([context_valid, target_valid], 1)
        pred = self.predictor(z, context_idx, target_idx, valid)
        cos = F.cosine_similarity(pred.float(), targets, dim=-1)  # (B, Nt)
        return 1 - (cos * target_valid).sum() / target_valid.sum()

    def mix(self, loss_jepa, loss_mlm):
        """The hybrid objective lam * L_JEPA + (1 - lam) * L_MLM, lam the paper's learned
        sigmoid(w) (or a fixed value) -> (loss, {lam}). Our other lambda modes: mix_variant."""
        if self.lambda_kind not in ("learned", "fixed"):
            return self.mix_variant(loss_jepa, loss_mlm)
        lam = self.lam()
        return lam * loss_jepa + (1 - lam) * loss_mlm, {"lam": lam}

    def lam(self):
        """The weight of L_JEPA: sigmoid(w), or the fixed value; 1 in mode jepa, 0 in mode mlm."""
        if self.cfg.mode != "hybrid":  # on the model's device: stats are all-reduced (NCCL)
            return self.encoder.ln_f.weight.new_tensor(1.0 if self.cfg.mode == "jepa" else 0.0)
        if self.lambda_kind == "learned":
            return torch.sigmoid(self.w)
        if self.lambda_kind == "fixed":
            return self.encoder.ln_f.weight.new_tensor(self.lam_fixed)
        return self.lam_variant()

    # ------------------------------------------------ our lambda variants (docs/lambda.md)

    def mix_variant(self, loss_jepa, loss_mlm):
        """lambda_mode uncertainty (Kendall et al. 2018, s = exp(log_sigma)) or balanced."""
        if self.lambda_kind == "uncertainty":
            s2 = torch.exp(2 * self.log_sigma)
            loss = loss_jepa / (2 * s2[0]) + loss_mlm / (2 * s2[1]) + self.log_sigma.sum()
            return loss, {"lam": self.lam()}
        loss, lam, lam_rel = self.loss_balanced(loss_jepa, loss_mlm)
        return loss, {"lam": lam, "lam_rel": lam_rel}

    def lam_variant(self):
        """L_JEPA's share of the raw-loss weights: of the two precisions (uncertainty), or of
        lam_rel / L_J(0) and (1 - lam_rel) / L_M(0) (balanced; before the first step lam_rel)."""
        if self.lambda_kind == "uncertainty":
            return torch.softmax(-2 * self.log_sigma, 0)[0]
        return torch.where(self.loss_init[0] > 0, self._raw_share(self.loss_init),
                           self.lam_balanced())

    def lam_balanced(self):
        """lambda_mode=balanced: the weight of L_JEPA on the common scale (lam_rel in the logs)."""
        return torch.sigmoid(BALANCE_SPEED * self.w)

    def _raw_share(self, init):
        rel = self.lam_balanced()
        return rel * init[1] / (rel * init[1] + (1 - rel) * init[0])

    def loss_balanced(self, loss_jepa, loss_mlm):
        """lambda_mode=balanced -> (loss, lam, lam_rel): the weight w *ascends* an
        entropy-regularised mix of the two losses' fractions still left, r_i = L_i / L_i(0), so
        lam settles at sigmoid((r_J - r_M) / tau). Derivation and the alternatives rejected:
        docs/lambda.md."""
        raw = torch.stack([loss_jepa, loss_mlm]).float()
        init = torch.where(self.loss_init > 0, self.loss_init, raw.detach())
        r = raw / init
        lam_rel = self.lam_balanced()
        fixed = lam_rel.detach()
        loss = fixed * r[0] + (1 - fixed) * r[1]
        rd = r.detach()
        z = BALANCE_SPEED * self.w  # H(lam) = lam softplus(-z) + (1 - lam) softplus(z)
        entropy = lam_rel * F.softplus(-z) + (1 - lam_rel) * F.softplus(z)
        phi = lam_rel * rd[0] + (1 - lam_rel) * rd[1] + self.balance_tau * entropy
        loss = loss + BALANCE_GRAD * (phi.detach() - phi)  # value 0; its gradient ascends Phi
        return loss, self._raw_share(init).detach(), fixed

    @torch.no_grad()
    def observe_losses(self, losses, skipped):
        """After a step (train.py): record (L_JEPA, L_MLM) of the global batch as L(0) if none is
        recorded yet and the step was not skipped. A buffer: checkpointed, so resume is exact."""
        first = (self.loss_init[0] == 0) & ~skipped & torch.isfinite(losses).all()
        self.loss_init.copy_(torch.where(first, losses.float(), self.loss_init))


# lambda_mode=balanced (PredictReconstruct.loss_balanced). TAU: lam* = sigmoid((r_J - r_M) / tau),
# so 0.5 keeps each objective above 12% of the weight while |r_J - r_M| <= 1 (r starts at 1 and
# falls). SPEED: Adam moves w by at most ~lr per step; the logit is SPEED * w, so at tiny's lr
# (1e-3) it can cross from 0 to -2 (lam 0.12) in ~70 steps. The network descends while the weight
# ascends: a game, and gradient descent-ascent at similar speeds circles the fixed point instead of
# settling (tests/test_lambda.py measures both); a weight much faster than the network tracks its
# best response lam*, and the network then descends the smooth maximum
# tau * log(exp(r_J / tau) + exp(r_M / tau)) of the two relative losses. GRAD: Adam's step does
# not depend on a gradient's scale but the global grad-norm clip does; w's gradient is scaled down
# so that the clip sees the network's gradient only (under `learned`, w's gradient
# lam (1 - lam)(L_J - L_M) is 1.5-1.9 on tiny, most of the logged grad_norm: docs/lambda.md).
BALANCE_TAU, BALANCE_SPEED, BALANCE_GRAD = 0.5, 30.0, 1e-3


def parse_lambda_mode(text: str):
    """'learned' | 'uncertainty' | 'fixed:<v>' with 0 <= v <= 1 | 'balanced[:<tau>]' with tau > 0
    -> (kind, v for fixed, tau for balanced, None otherwise)."""
    kind, colon, value = text.partition(":")
    if kind in ("learned", "uncertainty") and not colon:
        return kind, None
    if kind == "balanced" and not colon:
        return kind, BALANCE_TAU
    try:
        v = float(value)
    except ValueError:
        v = math.nan
    if kind == "fixed" and 0.0 <= v <= 1.0 or kind == "balanced" and 0.0 < v < math.inf:
        return kind, v
    raise ValueError(f"lambda_mode {text!r}: expected learned, uncertainty, fixed:<v> with v in "
                     f"[0, 1], or balanced[:<tau>] with tau > 0 (default {BALANCE_TAU})")


# ----------------------------------------------------------------------------- FLOPs and collapse

def encoder_flops(d: int, n_layers: int, n_seq: int, n_tok: int) -> int:
    """Forward matmul FLOPs of one pass over n_seq sequences of n_tok tokens: per layer and token
    24 d^2 for the weights (QKV 6, output 2, MLP 16) plus 4 n_tok d for attention (QK^T, AV)."""
    return n_seq * n_tok * n_layers * (24 * d * d + 4 * n_tok * d)


def step_flops(cfg: ModelConfig, batch_size: int, n_ctx: int, n_tgt: int, n_mlm: int) -> int:
    """Analytic FLOPs of one training step (forward + backward = 3x forward for trained passes;
    the EMA target encoder runs forward only). Embedding lookups, norms and softmax are ignored:
    they are not matmuls and cost a few percent at most."""
    d, L, p, B, T = cfg.d_model, cfg.n_layers, cfg.pred_dim, batch_size, cfg.seq_len
    trained = target = 0
    if cfg.mode != "jepa":  # full pass on the corrupted row + sparse head at masked positions
        trained += encoder_flops(d, L, B, T) + B * n_mlm * (2 * d * d + 2 * d * cfg.vocab_size)
    if cfg.mode != "mlm":  # context encoder + predictor; target encoder forward only
        trained += encoder_flops(d, L, B, n_ctx) + 2 * B * d * p * (n_ctx + n_tgt)
        trained += encoder_flops(p, cfg.pred_depth, B, n_ctx + n_tgt)
        target = encoder_flops(d, L, B, T)
    return 3 * trained + target


def param_counts(model: PredictReconstruct) -> dict:
    count = lambda m: 0 if m is None else sum(p.numel() for p in m.parameters())  # noqa: E731
    return {"encoder": count(model.encoder), "predictor": count(model.predictor),
            "head": count(model.mlm_head)}


@torch.no_grad()
def collapse_stats(features) -> dict:
    """Collapse signals of token features (N, d): mean per-dimension std and RankMe
    (Garrido et al. 2023: exp of the entropy of the normalised singular values)."""
    f = features.float()
    s = torch.linalg.svdvals(f)
    p = s / s.sum() + 1e-12
    return {"feat_std": f.std(0).mean().item(), "rankme": torch.exp(-(p * p.log()).sum()).item()}


@torch.no_grad()
def collapse_signal(net: PredictReconstruct, tokens, autocast) -> dict:
    """collapse_stats of a few clean rows' features: the target encoder's (the online one in mode
    mlm) under the run's autocast, layer-normed as the JEPA targets are. train.py logs it."""
    with autocast:
        h = (net.target_encoder or net.encoder)(tokens)
    return collapse_stats(F.layer_norm(h.float(), h.shape[-1:]).flatten(0, 1))


# ----------------------------------------------------------------------------- checkpoints

CKPT_FORMAT = "predict-reconstruct/ckpt-v1"


def load_checkpoint(path) -> dict:
    """Read a checkpoint of this project. A corrupt or missing newest file falls back to the
    previous one (train.py keeps it until a new one is complete), with a warning."""
    from lib.cli import UserError
    path = Path(path)
    candidates = [path] + ([path.with_name("ckpt-prev.pt")] if path.name == "ckpt.pt" else [])
    errors = []
    for p in candidates:
        if not p.is_file():
            errors.append(f"{p}: no such file")
            continue
        try:
            ckpt = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as e:  # truncated or garbage file
            errors.append(f"{p}: unreadable ({type(e).__name__})")
            continue
        if not isinstance(ckpt, dict) or ckpt.get("format") != CKPT_FORMAT:
            errors.append(f"{p}: not a checkpoint of this project (format {CKPT_FORMAT})")
            continue
        if errors:
            print(f"warning: {'; '.join(errors)}; using the previous checkpoint {p}",
                  file=sys.stderr)
        return ckpt
    raise UserError("; ".join(errors) + "; train one with `make pretrain` or pass the right path")


def load_encoder(ckpt_path, which: str = "online"):
    """The frozen encoder of a checkpoint for probes and analysis -> (encoder, tokenizer, config).
    which = online (the trained encoder) or target (its EMA copy; hybrid and jepa runs only)."""
    from tokenizers import Tokenizer

    from lib.cli import UserError
    if which not in ("online", "target"):
        raise UserError(f"encoder {which!r}: expected online or target")
    ckpt = load_checkpoint(ckpt_path)
    mcfg = ModelConfig(**ckpt["model_config"])
    prefix = "encoder." if which == "online" else "target_encoder."
    state = {k[len(prefix):]: v for k, v in ckpt["model"].items() if k.startswith(prefix)}
    if not state:
        raise UserError(f"{ckpt_path}: a {mcfg.mode} run has no {which} encoder; "
                        "use --encoder=online")
    encoder = Encoder(mcfg)
    encoder.load_state_dict(state)
    return (encoder.eval().requires_grad_(False), Tokenizer.from_str(ckpt["tokenizer"]),
            ckpt["config"])
