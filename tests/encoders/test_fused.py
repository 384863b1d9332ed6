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


def _fused(backend: str) -> tuple[Any, Any]:
    """A tiny BERT and its fused layers on `backend` (the test skipped where this PyTorch has no oneDNN)."""
    from mmgen.encoders.fused import fuse_bert, onednn_usable

    bert = _tiny_bert()
    if backend == "onednn" and not onednn_usable(bert):
        pytest.skip("this PyTorch has no oneDNN")
    return bert, fuse_bert(bert, backend)


@pytest.mark.parametrize("backend", ["onednn", "native"])
def test_fused_hidden_states_equal_the_model_s_own(backend: str) -> None:
    import torch

    bert, fused = _fused(backend)
    assert fused is not None and fused.backend == backend and len(fused.layers) == 2
    for n in (1, 2, 6, 33):
        ids = torch.randint(0, 50, (1, n), generator=torch.Generator().manual_seed(n))
        types = (torch.arange(n) >= n // 2).long()[None]
        with torch.inference_mode():
            reference = bert(input_ids=ids, token_type_ids=types).last_hidden_state
            ours = fused.hidden_states(ids, types)
        assert ours.shape == reference.shape
        torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)


def test_native_layers_share_the_model_s_weights() -> None:
    from mmgen.encoders.fused import fuse_bert

    bert = _tiny_bert()
    fused = fuse_bert(bert, "native")
    # the weights are shared, not copied (except the concatenated q/k/v projection)
    layer = bert.encoder.layer[0]
    assert fused.layers[0].linear1.weight.data_ptr() == layer.intermediate.dense.weight.data_ptr()
    assert fused.layers[0].norm2.bias.data_ptr() == layer.output.LayerNorm.bias.data_ptr()


def test_onednn_is_the_default_where_usable_and_checked_before_use(monkeypatch: pytest.MonkeyPatch) -> None:
    """oneDNN's layers are checked against the model on a probe text: layers that disagree (here built over
    other weights) are dropped for the native kernel, and the answers stay the model's."""
    import torch

    from mmgen.encoders import fused as fused_module

    bert = _tiny_bert()
    if not fused_module.onednn_usable(bert):
        pytest.skip("this PyTorch has no oneDNN")
    assert fused_module.fuse_bert(bert).backend == "onednn"
    other = _tiny_bert(initializer_range=0.2)
    real = fused_module._packed_layers
    monkeypatch.setattr(fused_module, "_packed_layers", lambda model: real(other))
    fused = fused_module.fuse_bert(bert)
    assert fused.backend == "native"
    ids = torch.tensor([[1, 7, 3, 44]])
    with torch.inference_mode():
        torch.testing.assert_close(fused.hidden_states(ids), bert(input_ids=ids).last_hidden_state, atol=1e-5, rtol=1e-5)


def test_backends_are_checked_and_a_cast_model_leaves_onednn() -> None:
    import torch

    from mmgen.encoders.fused import fuse_bert, onednn_usable

    bert = _tiny_bert()
    with pytest.raises(ValueError, match="unknown fused BERT backend"):
        fuse_bert(bert, "cuda-graphs")
    with pytest.raises(ValueError, match="float32 weights on the CPU"):
        fuse_bert(_tiny_bert().double(), "onednn")
    assert fuse_bert(_tiny_bert().double()).backend == "native"
    if not onednn_usable(bert):
        return
    fused = fuse_bert(bert)
    assert fused.backend == "onednn"
    bert.double()  # after fusing: the layers are rebuilt on the native kernel, in double precision
    ids = torch.tensor([[1, 7, 3, 44]])
    with torch.inference_mode():
        ours = fused.hidden_states(ids)
        torch.testing.assert_close(ours, bert(input_ids=ids).last_hidden_state, atol=1e-9, rtol=1e-9)
    assert fused.backend == "native" and ours.dtype == torch.float64


@pytest.mark.parametrize(
    "changes",
    [{"hidden_act": "relu"}, {"position_embedding_type": "relative_key"}, {"num_attention_heads": 1, "hidden_size": 32}],
)
def test_what_the_fused_kernel_does_not_compute_is_left_alone(changes: dict[str, Any]) -> None:
    from mmgen.encoders.fused import fuse_bert

    assert fuse_bert(_tiny_bert(**changes)) is None
    assert fuse_bert(_tiny_bert().train()) is None
    assert fuse_bert(object()) is None


@pytest.mark.parametrize("backend", ["onednn", "native"])
def test_weights_changed_in_place_or_moved_are_followed(backend: str) -> None:
    """The layers hold copies (oneDNN's reordered weights, the native q/k/v concatenation): a weight changed
    after fusing (an optimiser step, a load) rebuilds them, so they never answer with stale weights."""
    import torch

    bert, fused = _fused(backend)
    ids = torch.tensor([[1, 7, 3, 44]])
    with torch.no_grad():
        bert.encoder.layer[1].attention.self.key.weight.mul_(1.5)
        bert.encoder.layer[0].intermediate.dense.bias.add_(0.25)
    with torch.inference_mode():
        torch.testing.assert_close(fused.hidden_states(ids), bert(input_ids=ids).last_hidden_state, atol=1e-5, rtol=1e-5)
    bert.load_state_dict({k: v * 0.9 for k, v in bert.state_dict().items()})
    with torch.inference_mode():
        torch.testing.assert_close(fused.hidden_states(ids), bert(input_ids=ids).last_hidden_state, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", ["onednn", "native"])
def test_padded_batches_equal_the_model_s_own_and_training_is_refused(backend: str) -> None:
    """A padded batch: oneDNN's layers mask the padding keys; the native kernel hands it to the eager layers."""
    import torch

    bert, fused = _fused(backend)
    assert fused.batches == (backend == "onednn")
    ids = torch.tensor([[1, 7, 3, 44, 9, 2], [1, 5, 2, 0, 0, 0], [1, 2, 0, 0, 0, 0]])
    mask = (ids != 0).long()
    with torch.inference_mode():
        reference = bert(input_ids=ids, attention_mask=mask).last_hidden_state
        ours = fused.hidden_states(ids, None, mask)
        unpadded = fused.hidden_states(ids[:2, :3])
    keep = mask.bool()
    torch.testing.assert_close(ours[keep], reference[keep], atol=1e-5, rtol=1e-5)  # padding rows are not read
    torch.testing.assert_close(unpadded, bert(input_ids=ids[:2, :3]).last_hidden_state, atol=1e-5, rtol=1e-5)
    bert.train()
    with pytest.raises(RuntimeError, match="training mode"):
        fused.hidden_states(torch.tensor([[1, 2]]))


def test_one_st_query_takes_the_fused_layers_and_equals_encode(minilm: Encoder) -> None:
    """all-MiniLM-L6-v2 is a BERT: a single query runs the fused layers, with `encode`'s vector."""
    import torch

    fused = minilm._fused_layers()  # type: ignore[attr-defined]
    assert fused is not None and len(fused.layers) == 6
    texts = ["a red apple", "face vomiting", "ü ñ 漢字", "x"]
    with torch.inference_mode():
        reference = minilm._model.encode(texts, convert_to_numpy=True, normalize_embeddings=True,
                                         show_progress_bar=False)  # fmt: skip
    for text, expected in zip(texts, reference):
        np.testing.assert_allclose(minilm.encode_text([text])[0], expected, atol=1e-6)
    with torch.profiler.profile() as prof:
        minilm.encode_text(["a red apple"])
    counts = {e.key: e.count for e in prof.key_averages()}
    if fused.backend == "onednn":  # four reordered projections per layer, no MKL product in the layers
        assert counts.get("mkldnn::_linear_pointwise") == 24 and "aten::_transformer_encoder_layer_fwd" not in counts
    else:  # each layer is one native call
        assert counts.get("aten::_transformer_encoder_layer_fwd") == 6


def test_st_batches_take_oneDNN_s_layers_and_equal_encode(minilm: Encoder) -> None:
    """More texts than the direct path takes, of uneven lengths (so padded batches), in encode's batching."""
    import torch

    fused = minilm._fused_layers()  # type: ignore[attr-defined]
    if not fused.batches:
        pytest.skip("this PyTorch has no oneDNN")
    texts = [("a red apple " * (i % 7 + 1)).strip() + f" {i}" for i in range(37)] + ["ü ñ 漢字", "x" * 3000]
    with torch.inference_mode():
        reference = minilm._model.encode(texts, batch_size=16, convert_to_numpy=True, normalize_embeddings=True,
                                         show_progress_bar=False)  # fmt: skip
    with torch.profiler.profile() as prof:
        ours = minilm.encode_text(texts, batch_size=16)
    np.testing.assert_allclose(ours, reference, atol=1e-6)
    counts = {e.key: e.count for e in prof.key_averages()}
    assert counts.get("mkldnn::_linear_pointwise") == 3 * 24  # three batches of 16, 16 and 7
