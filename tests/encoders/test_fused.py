"""BERT layers run as PyTorch's fused encoder-layer kernel: the same hidden states as `transformers`' own."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from mmgen.encoders import Encoder


def _tiny_bert(**changes: Any) -> Any:
    from mmgen.compat import ensure_torchvision

    ensure_torchvision()
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    settings = {"vocab_size": 50, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
                "intermediate_size": 64, "max_position_embeddings": 40, "type_vocab_size": 2}  # fmt: skip
    return BertModel(BertConfig(**{**settings, **changes}), add_pooling_layer=False).eval()


def test_fused_hidden_states_equal_the_model_s_own() -> None:
    import torch

    from mmgen.encoders.fused import fuse_bert

    bert = _tiny_bert()
    fused = fuse_bert(bert)
    assert fused is not None and len(fused.layers) == 2
    ids = torch.tensor([[1, 7, 3, 44, 9, 2]])
    types = torch.tensor([[0, 0, 0, 1, 1, 1]])
    with torch.inference_mode():
        reference = bert(input_ids=ids, token_type_ids=types).last_hidden_state
        ours = fused.hidden_states(ids, types)
    assert ours.shape == reference.shape
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)
    # the weights are shared, not copied (except the concatenated q/k/v projection)
    layer = bert.encoder.layer[0]
    assert fused.layers[0].linear1.weight.data_ptr() == layer.intermediate.dense.weight.data_ptr()
    assert fused.layers[0].norm2.bias.data_ptr() == layer.output.LayerNorm.bias.data_ptr()


@pytest.mark.parametrize(
    "changes",
    [{"hidden_act": "relu"}, {"position_embedding_type": "relative_key"}, {"num_attention_heads": 1, "hidden_size": 32}],
)
def test_what_the_fused_kernel_does_not_compute_is_left_alone(changes: dict[str, Any]) -> None:
    from mmgen.encoders.fused import fuse_bert

    assert fuse_bert(_tiny_bert(**changes)) is None
    assert fuse_bert(_tiny_bert().train()) is None
    assert fuse_bert(object()) is None


def test_weights_changed_in_place_or_moved_are_followed() -> None:
    """The q/k/v projection is a concatenated copy: a weight changed after fusing (an optimiser step, a
    load) rebuilds the fused layers, so they never answer with stale weights."""
    import torch

    from mmgen.encoders.fused import fuse_bert

    bert = _tiny_bert()
    fused = fuse_bert(bert)
    ids = torch.tensor([[1, 7, 3, 44]])
    with torch.no_grad():
        bert.encoder.layer[1].attention.self.key.weight.mul_(1.5)
        bert.encoder.layer[0].intermediate.dense.bias.add_(0.25)
    with torch.inference_mode():
        torch.testing.assert_close(fused.hidden_states(ids), bert(input_ids=ids).last_hidden_state, atol=1e-5, rtol=1e-5)
    bert.load_state_dict({k: v * 0.9 for k, v in bert.state_dict().items()})
    with torch.inference_mode():
        torch.testing.assert_close(fused.hidden_states(ids), bert(input_ids=ids).last_hidden_state, atol=1e-5, rtol=1e-5)


def test_fused_layers_refuse_batches_and_training() -> None:
    import torch

    from mmgen.encoders.fused import fuse_bert

    bert = _tiny_bert()
    fused = fuse_bert(bert)
    with pytest.raises(ValueError, match="one unpadded text"):
        fused.hidden_states(torch.tensor([[1, 2], [3, 4]]))
    bert.train()
    with pytest.raises(RuntimeError, match="training mode"):
        fused.hidden_states(torch.tensor([[1, 2]]))


def test_one_st_query_takes_the_fused_layers_and_equals_encode(minilm: Encoder) -> None:
    """all-MiniLM-L6-v2 is a BERT: a single query runs the fused layers, with `encode`'s vector."""
    import torch

    fused = minilm._fused_layers()  # type: ignore[attr-defined]
    assert fused is not None and len(fused.layers) == 6
    calls: list[int] = []
    handle = fused.layers[0].register_forward_hook(lambda *_: calls.append(1))
    try:
        texts = ["a red apple", "face vomiting", "ü ñ 漢字"]
        with torch.inference_mode():
            reference = minilm._model.encode(texts, convert_to_numpy=True, normalize_embeddings=True,
                                             show_progress_bar=False)  # fmt: skip
        for text, expected in zip(texts, reference):
            np.testing.assert_allclose(minilm.encode_text([text])[0], expected, atol=1e-6)
    finally:
        handle.remove()
    assert len(calls) == len(texts)  # a hook keeps the layer off the fused kernel but on this path
    with torch.profiler.profile() as prof:
        minilm.encode_text(["a red apple"])
    kernels = [e for e in prof.key_averages() if e.key == "aten::_transformer_encoder_layer_fwd"]
    assert kernels and kernels[0].count == 6  # without hooks, each layer is one native call
