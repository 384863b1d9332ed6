"""The caption decoder: batching, cached decoding equal to the full pass, the copy head, decoding options."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from mmgen.errors import ConfigError, ManifestMismatchError
from mmgen.generate.decoder import IGNORE, CaptionDecoder, DecoderConfig, make_batch
from mmgen.generate.decoding import DecodeOptions, generate
from mmgen.generate.tokenizer import (
    BOS_ID,
    EOS_ID,
    EOS_SLOT,
    CaptionTokenizer,
    OutputVocab,
)

VOCAB_IDS = [100, 102, *range(2000, 2040)]
OOV = 5000  # a WordPiece id outside the output vocabulary


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread, and far slower on two when the machine is oversubscribed."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def vocab() -> OutputVocab:
    return OutputVocab(VOCAB_IDS, 30522)


@pytest.fixture(scope="module")
def words() -> torch.Tensor:
    return torch.randn(30522, 384, generator=torch.Generator().manual_seed(0))


def tiny(copy: bool = True, dropout: float = 0.0) -> DecoderConfig:
    return DecoderConfig(image_dim=8, d_model=32, layers=2, heads=2, dropout=dropout, prefix_tokens=2, copy=copy)


def test_make_batch_slots_extended_ids_and_targets(vocab) -> None:
    cfg = tiny()
    images = np.zeros((2, 8), dtype=np.float32)
    prompts = [[[2001, OOV], [2002]], []]
    targets = [[2003, OOV], [OOV, 2004]]
    b = make_batch(vocab, images, prompts, targets, cfg)
    v = len(vocab)
    # caption 1: 2001 OOV [SEP]; caption 2: 2002 [SEP]
    assert b.prompt_ids[0].tolist() == [2001, OOV, EOS_ID, 2002, EOS_ID]
    assert b.prompt_rank[0].tolist() == [1, 1, 1, 2, 2] and b.prompt_rank[1].tolist() == [0] * 5
    assert b.prompt_copy[0].tolist() == [vocab.slot(2001), v, -1, vocab.slot(2002), -1]
    assert b.ext_ids[0].tolist() == [OOV]
    assert b.target_in[0].tolist() == [BOS_ID, 2003, OOV]
    # the OOV target is copyable in row 0 (extended slot), and neither generable nor copyable in row 1
    assert b.target_out[0].tolist() == [vocab.slot(2003), v, EOS_SLOT]
    assert b.target_out[1].tolist() == [IGNORE, vocab.slot(2004), EOS_SLOT]


def test_output_vocab_checks() -> None:
    vocab = OutputVocab.from_captions([[2005, 2001], [2001, 102]], 30522)
    assert vocab.ids.tolist() == [100, 102, 2001, 2005] and vocab.slot(2005) == 3 and vocab.slot(7) == -1
    with pytest.raises(ManifestMismatchError):
        OutputVocab([2001, 102], 30522)
    with pytest.raises(ManifestMismatchError):
        OutputVocab([100, 102, 2001, 2001], 30522)


@pytest.mark.parametrize("copy", [True, False])
def test_cached_decoding_matches_the_full_pass(vocab, words, copy) -> None:
    torch.manual_seed(0)
    model = CaptionDecoder(tiny(copy), vocab, words).eval()
    rng = np.random.default_rng(0)
    images = rng.normal(size=(3, 8)).astype(np.float32)
    prompts = [[[2001, 2002, OOV], [2003]], [[2004, 2005]], []]
    targets = [[2001, OOV, 2002], [2007], [2003, 2004, 2005, 2006]]
    batch = make_batch(vocab, images, prompts, targets, model.cfg)
    full = model.log_probs(batch)
    state = model.start(batch)
    for t in range(batch.target_in.shape[1]):
        step = model.step(state, batch.target_in[:, t])
        real = batch.target_in[:, t] != 0  # padded positions differ by design (the full pass masks them)
        assert torch.allclose(step[real], full[:, t][real], atol=1e-5)
    # probabilities over output + extended slots sum to one
    assert torch.allclose(full.exp().sum(-1), torch.ones(full.shape[:2]), atol=1e-4)


def test_copy_head_learns_to_copy_a_word_outside_the_vocabulary(vocab, words) -> None:
    """The target is the first retrieved caption's first token: a fresh OOV id each time."""
    torch.manual_seed(0)
    cfg = tiny()
    model = CaptionDecoder(cfg, vocab, words)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)

    def sample(n: int) -> tuple:
        oov = rng.integers(6000, 9000, n)
        prompts = [[[int(o), 2001], [2002, 2003]] for o in oov]
        return rng.normal(size=(n, 8)).astype(np.float32), prompts, [[int(o)] for o in oov]

    for _ in range(150):
        images, prompts, targets = sample(32)
        loss = model(make_batch(vocab, images, prompts, targets, cfg))
        opt.zero_grad()
        loss.backward()
        opt.step()
    images, prompts, targets = sample(16)
    batch = make_batch(vocab, images, prompts, None, cfg)
    out = generate(model, batch, DecodeOptions("greedy"))
    assert sum(o == t for o, t in zip(out, targets)) >= 14, out


def test_decoding_methods_seeded_and_bounded(vocab, words) -> None:
    torch.manual_seed(1)
    model = CaptionDecoder(tiny(), vocab, words)
    images = np.random.default_rng(1).normal(size=(4, 8)).astype(np.float32)
    batch = make_batch(vocab, images, [[[2001, 2002]]] * 4, None, model.cfg)
    for method in ("greedy", "beam"):
        a = generate(model, batch, DecodeOptions(method, beams=3, max_tokens=5))
        assert a == generate(model, batch, DecodeOptions(method, beams=3, max_tokens=5))
        assert all(len(ids) <= 5 and 100 not in ids for ids in a)
    s1 = generate(model, batch, DecodeOptions("sample", temperature=2.0), torch.Generator().manual_seed(3))
    s2 = generate(model, batch, DecodeOptions("sample", temperature=2.0), torch.Generator().manual_seed(3))
    assert s1 == s2
    # beam bookkeeping (reordering the cache, finished rows) with one beam is exactly greedy search
    from mmgen.generate.decoding import _beam, _sequential

    one_beam, _ = _beam(model, batch, DecodeOptions("beam", beams=1), 8)
    greedy, _ = _sequential(model, batch, DecodeOptions("greedy"), 8, None)
    for (b,), (g,) in zip(one_beam, greedy):
        n = min(len(b), len(g))
        assert b[:n].tolist() == g[:n].tolist()


@pytest.mark.parametrize(
    "opts", [DecodeOptions("nucleus"), DecodeOptions("beam", beams=0), DecodeOptions("sample", temperature=0)]
)
def test_bad_decode_options(opts) -> None:
    with pytest.raises(ConfigError):
        opts.check()


def test_bad_config() -> None:
    with pytest.raises(ConfigError):
        DecoderConfig(d_model=30, heads=4).check()
    with pytest.raises(ConfigError):
        DecoderConfig.from_json({"d_model": 32, "wings": 2})


def test_tokenizer_round_trip() -> None:
    tok = CaptionTokenizer.default()
    for text in ("two-thirty", "woman police officer", "man's shoe, red"):
        assert tok.decode(tok.encode(text)) == text
    assert tok.embeddings().shape == (tok.vocab_size, 384)


def test_no_repeat_ngram_bans_only_repeats() -> None:
    from mmgen.generate.decoding import _ban_repeats

    logp = torch.zeros(2, 10)
    history = torch.tensor([[4, 5, 6, 4, 5], [4, 5, 6, 7, 8]])
    _ban_repeats(logp, history, 3)
    assert torch.isinf(logp[0, 6]) and int(torch.isinf(logp).sum()) == 1  # "4 5" was followed by 6 before
    bigrams = torch.zeros(1, 10)
    _ban_repeats(bigrams, torch.tensor([[3, 3]]), 2)
    assert torch.isinf(bigrams[0, 3])
    untouched = torch.zeros(1, 10)
    _ban_repeats(untouched, torch.tensor([[3, 3]]), 0)
    assert not torch.isinf(untouched).any()


def test_lexicon_constraint_writes_whole_words_only(words) -> None:
    from mmgen.generate.caption_words import Lexicon

    tok = CaptionTokenizer.default()
    captions = ["baby tux, linux", "entree interdite, symbol", "grinning face"]
    token_lists = [tok.encode(c) for c in captions]
    vocab = OutputVocab.from_captions(token_lists, tok.vocab_size)
    lexicon = Lexicon(tok.continuation_mask()).add(token_lists)
    assert tuple(tok.encode("tux")) in lexicon.words and len(tok.encode("tux")) == 2  # a two-piece word
    torch.manual_seed(0)
    model = CaptionDecoder(tiny(), vocab, words)
    images = np.random.default_rng(2).normal(size=(6, 8)).astype(np.float32)
    batch = make_batch(vocab, images, [[tok.encode("interdite symbol")]] * 6, None, model.cfg)
    free = generate(model, batch, DecodeOptions("greedy", max_tokens=8, no_repeat_ngram=0))
    assert any(w not in lexicon.words for ids in free for w in lexicon.split(ids))  # an untrained model glues pieces
    for opts in (DecodeOptions("greedy", max_tokens=8), DecodeOptions("beam", beams=3, max_tokens=8)):
        for ids in generate(model, batch, opts, lexicon=lexicon):
            assert all(w in lexicon.words for w in lexicon.split(ids)), tok.decode(ids)
    assert Lexicon.from_json(lexicon.to_json(), tok.continuation_mask()).words == lexicon.words


def test_length_limit_never_cuts_a_word_and_beam_gives_distinct_candidates(words) -> None:
    from mmgen.generate.caption_words import Lexicon, complete_words
    from mmgen.generate.decoding import generate_candidates

    tok = CaptionTokenizer.default()
    captions = ["baby tux, linux", "entree interdite, symbol", "grinning face"]
    token_lists = [tok.encode(c) for c in captions]
    vocab = OutputVocab.from_captions(token_lists, tok.vocab_size)
    lexicon = Lexicon(tok.continuation_mask()).add(token_lists)
    tux = tok.encode("tux")
    assert complete_words([*tok.encode("baby"), tux[0]], lexicon) == tok.encode("baby")  # "t" of "tux" dropped
    assert complete_words(tok.encode("baby tux"), lexicon) == tok.encode("baby tux")
    torch.manual_seed(1)
    model = CaptionDecoder(tiny(), vocab, words)
    images = np.random.default_rng(3).normal(size=(8, 8)).astype(np.float32)
    batch = make_batch(vocab, images, [[tok.encode("baby tux")]] * 8, None, model.cfg)
    for limit in (1, 2, 3):
        opts = DecodeOptions("beam", beams=3, max_tokens=limit)
        for row in generate_candidates(model, batch, opts, lexicon=lexicon):
            assert 1 <= len(row) <= 3 and len({tuple(c) for c in row}) == len(row)  # distinct, best first
            for ids in row:
                assert len(ids) <= limit and all(w in lexicon.words for w in lexicon.split(ids))
