"""A BERT text tower's layers run as PyTorch's fused encoder-layer kernel, for one query at a time.

Eager `transformers` runs each BERT layer as a dozen small modules (projections, reshapes, dropout,
layer norms); for one short query on a CPU their dispatch costs more than the arithmetic. PyTorch's
`nn.TransformerEncoderLayer` computes the same post-norm layer in one native call in inference
(`torch._transformer_encoder_layer_fwd`). `fuse_bert` builds that stack over a `BertModel`'s own
weights (sharing them, except the concatenated query/key/value projection) where the layer is
exactly that computation; `FusedBert.hidden_states` then gives the last hidden state of one text
with no padding, equal to the model's own within float rounding (tested against sentence-transformers'
`encode` and open_clip's `encode_text`).
"""

from __future__ import annotations

from typing import Any


def fuse_bert(model: Any) -> FusedBert | None:
    """The fused layers of a `transformers` BERT encoder, or None where they would not compute the same thing
    (another architecture, an activation other than exact GELU, relative positions, a decoder, hooks)."""
    config = getattr(model, "config", None)
    layers = getattr(getattr(model, "encoder", None), "layer", None)
    if config is None or layers is None or getattr(model, "embeddings", None) is None:
        return None
    if (
        getattr(config, "model_type", None) != "bert"
        or getattr(config, "hidden_act", None) != "gelu"
        or getattr(config, "position_embedding_type", "absolute") != "absolute"
        or getattr(config, "is_decoder", False)
        or getattr(config, "add_cross_attention", False)
        or getattr(config, "chunk_size_feed_forward", 0)
        or config.num_attention_heads % 2  # the fused kernel's own condition
        or model.training
        or any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    ):
        return None
    if any(layer.attention.self.query.bias is None for layer in layers) or any(
        layer.attention.output.LayerNorm.eps != layer.output.LayerNorm.eps for layer in layers
    ):
        return None
    return FusedBert(model)


def _fused_layers(model: Any) -> list[Any]:
    """One `nn.TransformerEncoderLayer` per BERT layer, over the same weights."""
    import torch

    config = model.config
    fused = []
    for layer in model.encoder.layer:
        attention, output = layer.attention, layer.output
        ours = torch.nn.TransformerEncoderLayer(
            config.hidden_size,
            config.num_attention_heads,
            config.intermediate_size,
            dropout=0.0,
            activation="gelu",
            layer_norm_eps=config.layer_norm_eps,
            batch_first=True,
            norm_first=False,
            device="meta",
        )
        q, k, v = attention.self.query, attention.self.key, attention.self.value
        ours.self_attn.in_proj_weight = torch.nn.Parameter(torch.cat([q.weight, k.weight, v.weight]).detach(), False)
        ours.self_attn.in_proj_bias = torch.nn.Parameter(torch.cat([q.bias, k.bias, v.bias]).detach(), False)
        ours.self_attn.out_proj.weight, ours.self_attn.out_proj.bias = _shared(attention.output.dense)
        ours.norm1.weight, ours.norm1.bias = _shared(attention.output.LayerNorm)
        ours.linear1.weight, ours.linear1.bias = _shared(layer.intermediate.dense)
        ours.linear2.weight, ours.linear2.bias = _shared(output.dense)
        ours.norm2.weight, ours.norm2.bias = _shared(output.LayerNorm)
        fused.append(ours.eval())
    return fused


def _shared(module: Any) -> tuple[Any, Any]:
    """A linear or layer-norm module's weight and bias as frozen parameters over the same storage."""
    import torch

    return (torch.nn.Parameter(module.weight.detach(), False), torch.nn.Parameter(module.bias.detach(), False))


class FusedBert:
    """A BERT model's embeddings followed by its layers as fused encoder layers (see the module's docstring)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self._signature = self._weights_signature()
        self.layers = _fused_layers(model)

    def _weights_signature(self) -> tuple[tuple[int, int], ...]:
        """Where each weight lives and its in-place version: a changed weight (training, `.to(device)`)
        changes it, and the fused layers (whose q/k/v projection is a concatenated copy) are rebuilt."""
        return tuple((p.data_ptr(), p._version) for p in self.model.encoder.parameters())

    def hidden_states(self, input_ids: Any, token_type_ids: Any | None = None) -> Any:
        """The last hidden state (1, n, hidden) of one unpadded text; call under `torch.inference_mode()`."""
        if input_ids.shape[0] != 1:
            raise ValueError(f"fused BERT layers take one unpadded text, not a batch of {input_ids.shape[0]}")
        if self.model.training:
            raise RuntimeError("fused BERT layers are for inference; the model is in training mode")
        signature = self._weights_signature()
        if signature != self._signature:
            self.layers, self._signature = _fused_layers(self.model), signature
        h = self.model.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
        for layer in self.layers:
            h = layer(h)
        return h
