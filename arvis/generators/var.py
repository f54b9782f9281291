"""VAR: next-scale prediction with an AdaLN transformer.

Tian et al., "Visual Autoregressive Modeling: Scalable Image Generation via Next-Scale
Prediction", NeurIPS 2024, https://arxiv.org/abs/2404.02905 (upstream FoundationVision/VAR).

Shapes: b batch, l = sum(p_k ** 2) tokens over k scales, n positions of one step, c width,
e code dimension (the tokenizer's latent channels), v vocabulary.

The sequence is [start tokens (p_0 ** 2 of them: class embedding + ``pos_start``), then
for each scale k >= 1 the running latent f_hat of scales < k, area-downsampled to p_k x p_k,
projected by ``word_embed``]; every position also gets a learned absolute position
(``pos_1LC``) and its scale's ``lvl_embed``. Position i predicts token i. Attention is
bidirectional within a scale and causal across scales (:func:`block_causal_mask`); while
sampling, one step feeds a whole scale against the KV cache of the earlier ones. The class
embedding is also the AdaLN condition of every block and of the head.

The inputs are computed from token ids by a frozen copy of the tokenizer's multi-scale
quantizer (codebook and phi convs): VAR's model holds the VAE's quantizer for the same
purpose. :meth:`VARGenerator.bind_tokenizer` copies it from a tokenizer, pipelines check that
the two agree, and the copy is saved with the generator so that it loads on its own.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Literal

import torch
from einops import rearrange
from torch import Tensor, nn

from arvis.conditions import Condition, as_condition
from arvis.generators.base import GENERATORS, Generator, GeneratorOutput, StepOutput
from arvis.nn.adaln import AdaLNHead, AdaLNTrunk, AdaLNTrunkConfig
from arvis.nn.attention import block_causal_mask
from arvis.nn.conditioning import ClassEmbedding
from arvis.nn.kv_cache import KVCache
from arvis.nn.linear import Linear
from arvis.quantizers.multiscale import MultiScaleQuantizer
from arvis.tokenizers.base import TokenLayout


@dataclasses.dataclass(frozen=True, kw_only=True)
class VARConfig(AdaLNTrunkConfig):
    """VAR transformer (the AdaLN trunk's fields are inherited); defaults are VAR-d16 on the released VAE at
    256 px.

    The quantizer fields (``vocab_size`` ... ``share_quant_resi``) describe the tokenizer and are
    filled by :meth:`VARGenerator.fit_config`. ``init_*`` follow ``build_vae_var``: weights
    N(0, init_std) truncated (init_std < 0 means sqrt(1 / 3c)), head x ``init_head``, AdaLN
    scale/shift x ``init_adaln``, gates x ``init_adaln_gamma`` (the README's d16 recipe uses 1e-3).
    """

    vocab_size: int = 4096
    code_dim: int = 32
    patch_nums: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
    quant_resi: float = 0.5
    share_quant_resi: int = 4
    num_classes: int = 1000
    class_dropout: float = 0.1
    label_smoothing: float = 0.0
    init_std: float = -1.0
    init_head: float = 0.02
    init_adaln: float = 0.5
    init_adaln_gamma: float = 1e-5

    def __post_init__(self) -> None:
        if self.dim % self.num_heads:
            raise ValueError(f"VARConfig.dim ({self.dim}) must be divisible by num_heads ({self.num_heads})")
        super().__post_init__()
        increasing = all(a < b for a, b in zip(self.patch_nums, self.patch_nums[1:], strict=False))
        if not self.patch_nums or self.patch_nums[0] < 1 or not increasing:
            raise ValueError(f"VARConfig.patch_nums must be strictly increasing positive sides, got {self.patch_nums}")
        if self.vocab_size < 2 or self.num_classes < 1 or self.code_dim < 1:
            raise ValueError("VARConfig: vocab_size >= 2 and positive num_classes, depth and code_dim are required")

    @property
    def layout(self) -> TokenLayout:
        return TokenLayout(tuple((p, p) for p in self.patch_nums))


class VARCache(KVCache):
    """KV cache plus the sampling state of next-scale prediction: the scale to feed next and f_hat."""

    def __init__(self, num_layers: int, max_length: int, *, static: bool = False) -> None:
        super().__init__(num_layers, max_length, static=static)
        self.scale = 0  # index of the scale whose logits the next step returns
        self.f_hat: Tensor | None = None  # (b, e, h, w) running latent of the scales fed so far


@GENERATORS.register
class VARGenerator(Generator):
    """Class-conditional next-scale prediction (VAR); one sampling step per scale."""

    config_class = VARConfig
    unit = "scale"
    samplers = ("next-scale",)

    def __init__(self, config: VARConfig) -> None:
        super().__init__(config)
        c = config.dim
        self.quantizer = MultiScaleQuantizer(config.vocab_size, config.code_dim, config.patch_nums,
                                             quant_resi=config.quant_resi, share_quant_resi=config.share_quant_resi)
        self.quantizer.requires_grad_(False)
        self.word_embed = Linear(config.code_dim, c)
        self.class_emb = ClassEmbedding(config.num_classes, c, config.class_dropout)
        self.first_l = config.patch_nums[0] ** 2
        self.pos_start = nn.Parameter(torch.empty(1, self.first_l, c))
        self.pos_1LC = nn.Parameter(torch.empty(1, config.layout.length, c))
        self.lvl_embed = nn.Embedding(len(config.patch_nums), c)
        self.trunk = AdaLNTrunk(config)
        self.head_nm = AdaLNHead(c, c, norm_eps=config.norm_eps)
        self.head = Linear(c, config.vocab_size)
        # the scale of every position, kept as data (not a buffer) so that meta-device builds stay valid
        self._levels = [level for level, side in enumerate(config.patch_nums) for _ in range(side * side)]
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``VAR.init_weights`` as ``build_vae_var`` calls it (see :class:`VARConfig`)."""
        config = self.config
        std = config.init_std if config.init_std >= 0 else math.sqrt(1 / config.dim / 3)
        for name, module in self.named_modules():
            if name.startswith("quantizer"):
                continue
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.trunc_normal_(module.weight, std=std)
        for parameter in (self.pos_start, self.pos_1LC):
            nn.init.trunc_normal_(parameter, std=std)
        with torch.no_grad():
            self.head.weight.mul_(config.init_head)
            self.head_nm.ada_lin[-1].weight.mul_(config.init_adaln)
            depth = len(self.trunk.blocks)
            for block in self.trunk.blocks:
                block.attn.proj.weight.div_(math.sqrt(2 * depth))
                block.ffn.fc2.weight.div_(math.sqrt(2 * depth))
                for parameter in (block.attn.q_bias, block.attn.v_bias):
                    nn.init.zeros_(parameter)
                if block.shared_adaln:
                    block.ada_gss[:, :, 2:].mul_(config.init_adaln)
                    block.ada_gss[:, :, :2].mul_(config.init_adaln_gamma)
                else:
                    weight = block.ada_lin[-1].weight  # rows: gamma1, gamma2 | scale1, scale2, shift1, shift2
                    weight[2 * config.dim:].mul_(config.init_adaln)
                    weight[:2 * config.dim].mul_(config.init_adaln_gamma)

    def no_weight_decay(self) -> set[str]:
        """Parameters upstream exempts from weight decay besides 1-D ones: positions, levels, gates, temperatures."""
        keys = ("pos_start", "pos_1LC", "lvl_embed", "ada_gss", "scale_mul")
        return {name for name, _ in self.named_parameters() if any(key in name for key in keys)}

    # ---- interface -----------------------------------------------------------------------------------------

    @property
    def layout(self) -> TokenLayout:
        return self.config.layout

    @classmethod
    def fit_config(cls, config: VARConfig, *, tokenizer, num_classes: int) -> VARConfig:
        """``config`` with the scales, codebook and phi settings of a multi-scale tokenizer."""
        quantizer = getattr(tokenizer, "quantizer", None)
        if not isinstance(quantizer, MultiScaleQuantizer):
            raise ValueError(f"VAR needs a multi-scale (VAR) tokenizer, got {type(tokenizer).__name__}")
        return dataclasses.replace(
            config, vocab_size=quantizer.codebook_size, code_dim=quantizer.dim, patch_nums=quantizer.patch_nums,
            quant_resi=tokenizer.config.quant_resi, share_quant_resi=tokenizer.config.share_quant_resi,
            num_classes=num_classes)

    def bind_tokenizer(self, tokenizer) -> None:
        """Copies the tokenizer's codebook and phi convs into this generator's frozen quantizer."""
        self.quantizer.load_state_dict(tokenizer.quantizer.state_dict())

    def check_tokenizer(self, tokenizer) -> None:
        """Raises ``ValueError`` unless this generator's quantizer copy equals ``tokenizer``'s quantizer."""
        theirs = getattr(tokenizer, "quantizer", None)
        if not isinstance(theirs, MultiScaleQuantizer):
            raise ValueError(f"VAR needs a multi-scale (VAR) tokenizer, got {type(tokenizer).__name__}")
        ours_state, theirs_state = self.quantizer.state_dict(), theirs.state_dict()
        differing = [name for name in ours_state if name not in theirs_state
                     or ours_state[name].shape != theirs_state[name].shape
                     or not torch.equal(ours_state[name].cpu(), theirs_state[name].cpu())]
        if differing or self.quantizer.phi_indices != theirs.phi_indices:
            raise ValueError(
                f"the generator's copy of the tokenizer's codebook and phi convs differs from this tokenizer's "
                f"({', '.join(differing) or 'phi assignment'}); the generator was trained with another tokenizer"
            )

    @classmethod
    def upgrade_state_dict(cls, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """arvis 0.1 kept ``blocks.{i}`` and ``shared_ada_lin`` at the top; they now live in ``trunk``."""
        return {("trunk." + key if key.startswith(("blocks.", "shared_ada_lin.")) else key): value
                for key, value in state.items()}

    # ---- the public seam (trunk, word_embed, head_nm and these) ------------------------------------------

    def drop_condition(self, condition: Condition) -> Condition:
        """The training-time label dropout (a no-op in eval mode), done once before :meth:`condition_embedding`:
        each class id replaced by the null class with probability ``class_dropout`` (upstream drops inside its
        class embedding; the draw is the same one at the same point)."""
        if not self.training:
            return condition
        return condition.replace(labels=self.class_emb.drop_labels(condition.labels))

    def condition_embedding(self, condition: Condition | Tensor) -> Tensor:
        """condition (class ids (b,) long, null class allowed) -> the class embedding (b, c): the start tokens'
        content and every block's AdaLN condition. Nothing is dropped here (:meth:`drop_condition`)."""
        return self.class_emb.embed(as_condition(condition).labels)

    def start_tokens(self, condition: Tensor) -> Tensor:
        """(b, p_0 ** 2, c): class embedding + pos_start (before position and level embeddings)."""
        return rearrange(condition, "b c -> b 1 c") + self.pos_start

    def position_embeddings(self, start: int, count: int) -> Tensor:
        """(1, count, c) learned positions of tokens [start, start + count)."""
        return self.pos_1LC[:, start:start + count]

    def level_embeddings(self, start: int, count: int, device: torch.device) -> Tensor:
        """(count, c) scale embeddings of tokens [start, start + count)."""
        return self.lvl_embed(torch.tensor(self._levels[start:start + count], device=device))

    def embed_positions(self, x: Tensor, start: int) -> Tensor:
        """Inputs (b, n, c) of tokens [start, start + n) plus their scale and position embeddings."""
        return x + self.level_embeddings(start, x.shape[1], x.device) + self.position_embeddings(start, x.shape[1])

    def logits(self, hidden: Tensor, condition: Tensor) -> Tensor:
        """Trunk hidden states (b, n, c) and the condition (b, c) -> logits (b, n, v) float32 (AdaLN head).

        The head runs in float32 as upstream's, or in the weights' dtype when the model was cast to a lower
        precision (``arvis.load(..., dtype=torch.bfloat16)``), whose weights cannot multiply float32 inputs."""
        dtype = self.head.weight.dtype
        return self.head(self.head_nm(hidden.to(dtype), condition.to(dtype))).float()

    def teacher_forcing_inputs(self, tokens: Tensor) -> Tensor:
        """tokens (b, l) long -> the next-scale inputs (b, l - p_0 ** 2, e) of scales 1.. (f_hat of the earlier
        scales, downsampled), built by the frozen quantizer in full precision even inside the training loop's
        autocast, as upstream builds them outside its amp context."""
        with torch.no_grad(), torch.autocast(tokens.device.type, enabled=False):
            return self.quantizer.teacher_forcing_inputs(self.quantizer.indices_to_scales(tokens))

    def student_forcing_inputs(self, tokens: Tensor, predicted: Tensor, scales: Sequence[int]) -> Tensor:
        """Next-scale inputs (b, l - p_0 ** 2, e) with some scales rolled out from predictions (SAR's stagger-scale
        rollout on residual inputs): the input of each scale k in ``scales`` (1..K-1) is f_hat of the
        ground-truth scales < k - 1 plus the ``predicted`` scale k - 1, downsampled to scale k; every other
        scale's input is :meth:`teacher_forcing_inputs`'. tokens, predicted: (b, l) long ids (scales
        concatenated). Built like the teacher-forcing inputs: frozen quantizer, full precision, no gradient."""
        self.check_tokens(tokens)
        self.check_tokens(predicted)
        count = len(self.config.patch_nums)
        rolled = sorted(set(scales))
        if any(not 1 <= scale < count for scale in rolled):
            raise ValueError(f"rolled-out scales must lie in 1..{count - 1} (scale 0 is the start tokens), got "
                             f"{list(scales)}")
        quantizer = self.quantizer
        with torch.no_grad(), torch.autocast(tokens.device.type, enabled=False):
            truth, guesses = quantizer.indices_to_scales(tokens), quantizer.indices_to_scales(predicted)
            f_hat, inputs = None, []
            for scale in range(count - 1):  # builds the input of scale + 1
                truth_f_hat, truth_input = quantizer.next_scale_input(scale, f_hat, quantizer.lookup(truth[scale]))
                if scale + 1 in rolled:
                    _, truth_input = quantizer.next_scale_input(scale, f_hat, quantizer.lookup(guesses[scale]))
                inputs.append(truth_input)
                f_hat = truth_f_hat
            return torch.cat(inputs, dim=1)

    # ---- model ---------------------------------------------------------------------------------------------

    def forward(self, inputs: Tensor, condition: Condition | Tensor, targets: Tensor | None = None, *,
                condition_dropout: bool = True) -> GeneratorOutput:
        """Teacher forcing. ``inputs``: token ids (b, l) long (scales concatenated; they are also the default
        targets), or precomputed next-scale inputs (b, l - p_0 ** 2, e) float (e.g. SAR's student forcing, whose
        scale k input comes from the previous scale's prediction), which need ``targets`` (b, l) long
        (``IGNORE_INDEX`` where none). condition: class ids (b,) long -> loss and logits (b, l, v).
        ``condition_dropout=False``: the caller dropped the labels already (:meth:`drop_condition`, once for
        several passes over the same rows) and they are used as given."""
        condition = self.check_condition(condition)
        if condition_dropout:
            condition = self.drop_condition(condition)
        if inputs.is_floating_point():
            expected = (condition.batch_size, self.layout.length - self.first_l, self.config.code_dim)
            if tuple(inputs.shape) != expected:
                raise ValueError(f"expected next-scale inputs of shape {expected}, got {tuple(inputs.shape)}")
            if targets is None:
                raise ValueError("precomputed next-scale inputs need targets (b, l) long token ids")
            scale_inputs = inputs
        else:
            self.check_tokens(inputs)
            scale_inputs = self.teacher_forcing_inputs(inputs)
            targets = inputs if targets is None else targets
        targets = self.check_targets(targets, condition.batch_size)
        embedding = self.condition_embedding(condition)
        x = torch.cat([self.start_tokens(embedding), self.word_embed(scale_inputs.to(self.word_embed.weight.dtype))],
                      1)
        mask = block_causal_mask([p * p for p in self.config.patch_nums], device=x.device)
        hidden = self.trunk(self.embed_positions(x, 0), embedding, mask=mask)
        return self.teacher_forcing_output(self.logits(hidden, embedding), targets,
                                           label_smoothing=self.config.label_smoothing)

    def new_cache(self, batch_size: int) -> VARCache:
        return self.trunk.new_cache(self.layout.length, VARCache)

    def codebook(self) -> Tensor:
        """(v, e) code vectors, for samplers that feed soft mixtures of codes (VAR's ``more_smooth``)."""
        return self.quantizer.codebook.weight

    def step(self, tokens: Tensor | None, condition: Condition | Tensor, cache: VARCache, *,
             output: Literal["logits", "hidden", "both"] = "logits", store: bool = True) -> Tensor | StepOutput:
        """Feeds the start tokens (``tokens=None``, first call) or the scale just sampled; -> next scale's logits.

        ``tokens`` is (b, p_k ** 2) long ids of scale k, or (b, p_k ** 2, e) float code vectors (a soft
        mixture of codes); the returned logits are (b, p_{k+1} ** 2, v) (``output="hidden"``: the trunk's
        hidden states (b, p_{k+1} ** 2, c); ``"both"``: a :class:`StepOutput`). ``store=False`` leaves the cache
        (keys, values, f_hat and the scale counter) unchanged. The condition is checked on the first call only.
        """
        condition = as_condition(condition)
        if not isinstance(cache, VARCache):
            raise ValueError("VAR steps need the cache from new_cache()")
        self.check_step_order(tokens, cache.length, "the start tokens")
        if tokens is None:
            self.check_condition(condition)
        embedding = self.condition_embedding(condition)
        if tokens is None:
            x = self.start_tokens(embedding)
        else:
            f_hat, x = self._next_scale_input(tokens, cache)
            if store:
                cache.f_hat = f_hat
        hidden = self.trunk(self.embed_positions(x, cache.length), embedding, cache=cache, store=store)
        if store:
            cache.scale += 1
        if output == "hidden":
            return hidden
        logits = self.logits(hidden, embedding)
        return StepOutput(logits=logits, hidden=hidden) if output == "both" else logits

    def _next_scale_input(self, tokens: Tensor, cache: VARCache) -> tuple[Tensor, Tensor]:
        """Scale ``cache.scale - 1``'s ids or codes -> (the updated f_hat, embedded input of scale ``cache.scale``)."""
        scale = cache.scale - 1
        if scale >= len(self.config.patch_nums) - 1:
            raise ValueError("every scale has been fed; start a new cache for another image")
        side = self.config.patch_nums[scale]
        if tokens.dtype == torch.long:
            if tokens.shape[1:] != (side * side,):
                raise ValueError(f"expected (batch, {side * side}) token ids of scale {scale}, got {tuple(tokens.shape)}")
            codes = self.quantizer.lookup(rearrange(tokens, "b (h w) -> b h w", h=side))
        else:
            if tokens.shape[1:] != (side * side, self.config.code_dim):
                raise ValueError(f"expected (batch, {side * side}, {self.config.code_dim}) code vectors of scale "
                                 f"{scale}, got {tuple(tokens.shape)}")
            codes = rearrange(tokens, "b (h w) e -> b e h w", h=side)
        f_hat, next_input = self.quantizer.next_scale_input(scale, cache.f_hat, codes)
        return f_hat, self.word_embed(next_input.to(self.word_embed.weight.dtype))


def _var(depth: int, **overrides) -> VARConfig:
    """``build_vae_var``'s sizes: width 64·depth, heads = depth, drop path 0.1·depth/24."""
    return VARConfig(depth=depth, dim=64 * depth, num_heads=depth, drop_path_rate=0.1 * depth / 24, **overrides)


PATCH_NUMS_512 = (1, 2, 3, 4, 6, 9, 13, 18, 24, 32)

GENERATORS.add_preset("var-tiny", VARConfig(vocab_size=64, code_dim=8, patch_nums=(1, 2, 3, 4), num_classes=10,
                                            depth=2, dim=32, num_heads=2, drop_path_rate=0.0),
                      "2-layer test model for var-vae-tiny (scales 1, 2, 3, 4)")
GENERATORS.add_preset("var-demo", VARConfig(vocab_size=512, code_dim=16, patch_nums=(1, 2, 3, 4, 6, 8),
                                            num_classes=10, depth=4, dim=128, num_heads=4, drop_path_rate=0.0,
                                            init_adaln_gamma=1e-3),
                      "quickstart-size model for var-vae-demo on the built-in glyphs")
GENERATORS.add_preset("var-d16", _var(16), "VAR-d16, 310M (256 px, 10 scales)")
GENERATORS.add_preset("var-d20", _var(20), "VAR-d20, 600M")
GENERATORS.add_preset("var-d24", _var(24), "VAR-d24, 1.0B")
GENERATORS.add_preset("var-d30", _var(30), "VAR-d30, 2.0B")
GENERATORS.add_preset("var-d36", _var(36, patch_nums=PATCH_NUMS_512, shared_adaln=True),
                      "VAR-d36-s, 2.3B (512 px, shared AdaLN)")
