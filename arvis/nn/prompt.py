"""Text-prompt conditioning: prompt tokens or frozen-encoder features -> a generator's prefix (LlamaGen t2i).

Shapes: b batch, p prompt positions (fixed, e.g. 120), e feature width, d model width.

LlamaGen's ``CaptionEmbedder`` projects frozen FLAN-T5 features (b, 120, 2048) with a GELU(tanh) MLP to the
model width (no biases); a dropped caption (probability 0.1 in training) is replaced by a fixed random "uncond" sequence,
which is also the null branch of guidance. Here the features are either a frozen encoder's or a learned table
over a text vocabulary (``vocab_size``; id 0 is the padding), and the null prompt is the empty prompt (no real
token): its features are the fixed random null sequence over all p positions, and every one of them may be
attended to. Deviation from upstream, where the null sequence keeps the dropped caption's key mask: here the
null condition does not depend on which caption was dropped, so guidance has one joint null condition and a
batch gives what its rows give one by one.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from arvis.nn.mlp import GeluMLP


def drop_prompt_rows(mask: Tensor, probability: float) -> Tensor:
    """A key-padding mask (b, p) with each row emptied (the empty prompt) with ``probability``, drawn from torch's
    global RNG (which the training loop seeds, as label dropout)."""
    if probability <= 0:
        return mask
    keep = torch.rand(mask.shape[0], device=mask.device) >= probability
    return mask & keep[:, None]


class PromptEmbedding(nn.Module):
    """Prompt ids (b, p) long or features (b, p, e) float, and the key-padding mask (b, p) bool -> the prefix
    (b, p, d); :meth:`attendable` gives the prefix positions other positions may attend to, and
    :meth:`drop_prompts` the training-time prompt dropout (applied to the mask before both).

    Args:
        length: p, the fixed prompt length every prompt is padded to.
        feature_dim: e, the width of the prompt features (the frozen encoder's, or the learned table's).
        dim: d, the model width.
        vocab_size: the text vocabulary of a learned table (id 0 pads), or None when the prompt comes as
            features of a frozen encoder.
        dropout: probability that a training prompt is replaced by the empty prompt (teaches the null prompt).
    """

    def __init__(self, length: int, feature_dim: int, dim: int, *, vocab_size: int | None = None,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.length, self.feature_dim, self.vocab_size, self.dropout = length, feature_dim, vocab_size, dropout
        self.token_features = nn.Embedding(vocab_size, feature_dim) if vocab_size else None
        self.register_buffer("uncond_embedding", torch.empty(length, feature_dim))  # fixed: a buffer upstream too
        self.cap_proj = GeluMLP(feature_dim, dim, out_dim=dim, approximate="tanh", bias=False)
        self.reset_null()

    def reset_null(self) -> None:
        """Upstream's null sequence: N(0, 1) / sqrt(e), never trained."""
        with torch.no_grad():
            self.uncond_embedding.normal_().div_(self.feature_dim ** 0.5)

    def drop_prompts(self, mask: Tensor) -> Tensor:
        """The mask with each row emptied with probability ``dropout`` (torch's global RNG, which the training
        loop seeds, as label dropout)."""
        return drop_prompt_rows(mask, self.dropout)

    def features(self, prompt: Tensor) -> Tensor:
        """(b, p) ids or (b, p, e) features -> (b, p, e) float."""
        if self.token_features is None:
            return prompt
        return self.token_features(prompt)

    @staticmethod
    def attendable(mask: Tensor) -> Tensor:
        """(b, p) key-padding mask -> (b, p) bool, the prefix positions that may be attended to: the real
        tokens, or every position of an empty prompt (the null sequence)."""
        return mask | ~mask.any(dim=1, keepdim=True)

    def forward(self, prompt: Tensor, mask: Tensor) -> Tensor:
        """-> the prefix (b, p, d): the masked features projected, the null sequence for an empty prompt."""
        empty = ~mask.any(dim=1)
        dtype = self.cap_proj.fc1.weight.dtype
        features = self.features(prompt).to(dtype) * mask[..., None].to(dtype)
        features = torch.where(empty[:, None, None], self.uncond_embedding.to(dtype), features)
        return self.cap_proj(features)
