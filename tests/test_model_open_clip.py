"""Fidelity with a live peer: open_clip (PyPI ``open-clip-torch``, random weights, float32, no network).

open_clip is an independent implementation of CLIP. Its ``state_dict()`` is in OpenAI's layout; ``ViT-B-32-quickgelu``
computes QuickGELU (OpenAI's) and ``ViT-B-32`` exact GELU (open_clip's own architectures, used by the LAION and
DataComp weights). The tokenizer is checked on a corpus of more than 5,000 strings, the towers and zero-shot scoring
to 1e-5, and this project's OpenAI-layout export is loaded back by open_clip's own loaders.
"""
from __future__ import annotations

import open_clip
import pytest
import regex
import torch

import actionclip
from actionclip.checkpoint import save_openai

MODELS = ("ViT-B-32-quickgelu", "ViT-B-32")
TOL = 1e-5
# OpenAI's pre-tokenisation pattern: open_clip's differs only in its special strings (<start_of_text>, <end_of_text>).
OPENAI_PATTERN = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


# ------------------------------------------------------------------------------------------------------------------
# Tokenizer
# ------------------------------------------------------------------------------------------------------------------
def corpus() -> list[str]:
    labels = actionclip.kinetics400_labels()
    texts = [t.format(c) for t in actionclip.TEMPLATES for c in labels]  # 6,400
    texts += labels
    texts += ["café au lait", "naïve façade", "Straße", "日本語のテキスト", "emoji 🙂🎉 party", "Ελληνικά κείμενα",
              "русский текст", "نص عربي", "ﬁne ligature", "e\u0301 combining", "full\u3000width space",
              "tab\tand\nnewline", "zero\u200bwidth", "mojibake: Ã©tÃ©", "Ｆｕｌｌｗｉｄｔｈ", "ﾊﾝｶｸ", "  padded  "]
    texts += ["AT&amp;T", "&lt;b&gt;bold&lt;/b&gt;", "&amp;amp;lt;", "&quot;quoted&quot;", "&#39;s", "&nbsp;space",
              "&amp;amp;amp;amp;", "fish &amp; chips", "&eacute;t&eacute;"]
    texts += ["it's", "they'll", "I'D", "we're", "you've", "I'm", "can't", "123456", "3.14", "1st 2nd 3rd", "...!?", "'"]
    texts += ["", " ", "\n\t "]
    specials = ["hello <|endoftext|> world", "<|startoftext|>", "<|endoftext|>", "a<|endoftext|>b", "x <|ENDOFTEXT|> y",
                "!<|endoftext|>", "<|endoftext|>!", "<|endoftext|><|startoftext|>", "&lt;|endoftext|&gt;",
                "<start_of_text> open_clip's strings are plain text here", "<|startoftext|x", "<||endoftext||>"]
    specials += [f"{c} <|endoftext|>" for c in labels[:40]] + [f"<|startoftext|>{c}" for c in labels[40:80]]
    texts += specials
    texts += [" ".join(labels[i:i + 40]) for i in range(0, len(labels), 20)] + ["word " * 100, "a" * 500]
    return texts


def openai_rule_tokenizer() -> open_clip.tokenizer.SimpleTokenizer:
    """open_clip's BPE, vocabulary, cleaning and truncation with OpenAI's special strings: the one difference
    between the two tokenizers, which a literal ``<|endoftext|>`` in a prompt exposes."""
    tok = open_clip.tokenizer.SimpleTokenizer()
    tok.pat = regex.compile(OPENAI_PATTERN, regex.IGNORECASE)
    tok.cache.update({"<|startoftext|>": "<start_of_text>", "<|endoftext|>": "<end_of_text>"})
    return tok


def test_tokenizer_ids_equal_the_peer_on_a_corpus():
    texts = corpus()
    assert len(texts) >= 5000
    ours = actionclip.tokenize(texts, truncate=True)  # open_clip always truncates to 77 with EOT last
    reference = openai_rule_tokenizer()(texts)
    mismatches = [t for t, a, b in zip(texts, ours, reference) if not torch.equal(a, b)]
    assert mismatches == []
    # every string without special-token text: also identical to open_clip's own tokenize, unmodified
    plain = [i for i, t in enumerate(texts) if not regex.search("startoftext|endoftext|start_of_text", t, regex.IGNORECASE)]
    assert len(plain) >= 5000
    assert torch.equal(ours[plain], open_clip.tokenize([texts[i] for i in plain]))
    # the documented vector, and truncation really exercised
    hello = texts.index("hello <|endoftext|> world")
    assert ours[hello, :5].tolist() == [49406, 3306, 49407, 1002, 49407]
    assert sum(int(row[-1] == 49407) for row in ours) >= 20


# ------------------------------------------------------------------------------------------------------------------
# Towers, zero-shot scores, export
# ------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(1)
    video = torch.randn(1, 2, 3, 224, 224, generator=g)  # one clip of two CLIP-normalised frames
    labels = ["air drumming", "abseiling"]
    prompts = [t.format(c) for t in actionclip.TEMPLATES for c in labels]  # the zero-shot bank, template-major
    return video, labels, prompts


@pytest.fixture(scope="module", params=MODELS)
def pair(request, inputs, tmp_path_factory):
    """An open_clip model with random weights (LayerNorms and biases perturbed, so every tensor's mapping shows),
    its features on the inputs (computed once: open_clip always runs the full 77-token context), and this project's
    model loaded from the peer's saved ``state_dict()``."""
    name = request.param
    video, _, prompts = inputs
    torch.manual_seed(0)
    peer = open_clip.create_model(name, pretrained=None).eval()
    with torch.no_grad():
        for key, p in peer.named_parameters():
            if key.endswith("bias") or ".ln_" in key or key.startswith("ln_"):
                p.add_(0.05 * torch.randn_like(p))
        features = {"image": peer.encode_image(video[0]), "text": peer.encode_text(open_clip.tokenize(prompts))}
    path = tmp_path_factory.mktemp("open_clip") / f"{name}.pt"
    torch.save(peer.state_dict(), path)
    ours = actionclip.load(path, open_clip_model=name)
    return name, peer, features, ours


def test_activation_follows_the_open_clip_name(pair):
    name, _, _, ours = pair
    expected = "quick_gelu" if name.endswith("-quickgelu") else "gelu"
    assert ours.config.vision.activation == ours.config.text.activation == expected


def test_encode_image_and_text_match_open_clip(pair, inputs):
    name, _, features, ours = pair
    video, _, prompts = inputs
    with torch.no_grad():
        image_diff = max_abs(ours.encode_image(video[0]), features["image"])
        text_diff = max_abs(ours.encode_text(actionclip.tokenize(prompts)), features["text"])
    print(f"\n{name}: encode_image max abs diff {image_diff:.2e}, encode_text {text_diff:.2e}")
    assert image_diff < TOL and text_diff < TOL


def test_zero_shot_probabilities_match_open_clip(pair, inputs):
    """The original's test-time rule on the peer's features: meanP over frames, x100, softmax per template, mean."""
    name, _, features, ours = pair
    video, labels, _ = inputs
    v = torch.nn.functional.normalize(features["image"].mean(0, keepdim=True), dim=-1)
    t = torch.nn.functional.normalize(features["text"], dim=-1)
    expected = (100.0 * v @ t.t()).view(1, len(actionclip.TEMPLATES), len(labels)).softmax(-1).mean(1)
    with torch.no_grad():
        got = actionclip.zero_shot_probs(ours, video, labels)
    diff = max_abs(got, expected)
    print(f"\n{name}: zero-shot probabilities max abs diff {diff:.2e}")
    assert diff < TOL


def test_export_loads_back_into_open_clip(pair, inputs, tmp_path):
    """``save_openai`` (``actionclip model convert --to openai``): open_clip's create_model(name, pretrained=file)
    gives the peer's own weights and outputs back, bit for bit; its port of OpenAI's ``clip.load``
    (``load_openai_model``: TorchScript first, then a state dict, strict, fp16 cast of the matrices) reads it too."""
    name, peer, features, ours = pair
    video, _, prompts = inputs
    path = save_openai(ours, tmp_path / "export.pt")
    again = open_clip.create_model(name, pretrained=str(path)).eval()
    peer_state, again_state = peer.state_dict(), again.state_dict()
    assert again_state.keys() == peer_state.keys()
    assert all(torch.equal(again_state[k], peer_state[k]) for k in peer_state)
    ids = open_clip.tokenize(prompts[:1])
    with torch.no_grad():
        image_diff = max_abs(again.encode_image(video[0]), features["image"])
        text_diff = max_abs(again.encode_text(ids), peer.encode_text(ids))
    print(f"\n{name}: export round trip max abs diff image {image_diff:.1e}, text {text_diff:.1e}")
    assert image_diff == 0.0 and text_diff == 0.0
    if name.endswith("-quickgelu"):  # OpenAI's loader always builds QuickGELU towers
        exported = torch.load(path, weights_only=True)
        openai_style = open_clip.load_openai_model(str(path), device="cpu").eval()
        for k, v in openai_style.state_dict().items():
            assert torch.equal(v, exported[k]) or torch.equal(v, exported[k].half().float()), k
