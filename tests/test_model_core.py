"""Tokenizer, towers, fusion modules, gradients and zero-shot scoring of the model core."""
from __future__ import annotations

import pytest
import torch

import actionclip
from actionclip.tokenizer import TextTooLongError, get_tokenizer


@pytest.mark.parametrize(
    "text, ids",
    [
        ("a photo of action abseiling", [49406, 320, 1125, 539, 1816, 596, 567, 3299, 49407]),
        ("air drumming", [49406, 1922, 35480, 49407]),
        ("The woman is air drumming", [49406, 518, 2308, 533, 1922, 35480, 49407]),
        ("Can you recognize the action of air drumming?",
         [49406, 753, 592, 10905, 518, 1816, 539, 1922, 35480, 286, 49407]),
        ("a diagram", [49406, 320, 22697, 49407]),
        # literal special-token text is the special id, as in OpenAI's clip.tokenize
        ("hello <|endoftext|> world", [49406, 3306, 49407, 1002, 49407]),
        ("HELLO <|ENDOFTEXT|> World", [49406, 3306, 49407, 1002, 49407]),
        ("<|startoftext|>air drumming<|endoftext|>", [49406, 49406, 1922, 35480, 49407, 49407]),
    ],
)
def test_tokenizer_matches_openai_ids(text, ids):
    out = actionclip.tokenize(text)
    assert out.shape == (1, 77) and out.dtype == torch.long
    assert out[0, : len(ids)].tolist() == ids
    assert out[0, len(ids):].eq(0).all()


def test_tokenizer_cleaning_and_vocab():
    tok = get_tokenizer()
    assert tok.vocab_size == 49408 and tok.sot_token_id == 49406 and tok.eot_token_id == 49407
    # html entities (double-escaped), whitespace runs and case are normalised away
    assert actionclip.tokenize("AIR &amp;amp;   Drumming").tolist() == actionclip.tokenize("air & drumming").tolist()
    assert tok.decode(actionclip.tokenize("air drumming")[0]) == "air drumming"


def test_tokenizer_length_limit():
    long_text = " ".join(["word"] * 100)
    with pytest.raises(TextTooLongError, match="longer than the context length 77"):
        actionclip.tokenize(long_text)
    out = actionclip.tokenize(long_text, truncate=True)
    assert out.shape == (1, 77) and out[0, -1] == 49407 and out[0, 0] == 49406
    assert actionclip.tokenize(["a", "b"], context_length=10).shape == (2, 10)


def test_presets_and_parameter_counts():
    names = actionclip.list_presets()
    for name in ("ViT-B/32-8", "ViT-B/16-8", "ViT-B/16-16", "ViT-B/16-32", "tiny-8"):
        assert name in names
    cfg = actionclip.preset_config("ViT-B/16-32")
    assert cfg.num_frames == 32 and cfg.vision.patch_size == 16 and cfg.fusion.kind == "Transf"
    # full-size parameter counts equal the published architecture's (spec appendix A)
    with torch.device("meta"):
        model = actionclip.ActionCLIP(actionclip.preset_config("ViT-B/32-8"))
    groups = {k: sum(p.numel() for p in v) for k, v in model.param_groups().items()}
    assert groups == {"image": 87_849_216, "text": 63_428_097, "fusion": 18_953_728}


@pytest.mark.parametrize("fusion", actionclip.FUSIONS)
def test_every_parameter_gets_a_gradient(fusion):
    torch.manual_seed(0)
    model = actionclip.create_model("tiny-8", fusion={"kind": fusion}, vision={"image_size": 32}).train()
    video = torch.randn(2, 8, 3, 32, 32)
    ids = actionclip.tokenize(["moving left", "a small red circle growing"])
    v, t = model(video, ids)
    assert v.shape == (2, 128) and t.shape == (2, 128)
    logits = model.logit_scale.exp() * torch.nn.functional.normalize(v, dim=-1) @ torch.nn.functional.normalize(t, dim=-1).t()
    loss = torch.nn.functional.cross_entropy(logits, torch.arange(2))
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    # token embedding rows of unused ids are zero but present; every tensor must be reached
    assert missing == []
    assert torch.isfinite(loss)


def test_gradient_checkpointing_gives_identical_outputs_and_grads():
    torch.manual_seed(0)
    model = actionclip.create_model("tiny-8", vision={"image_size": 32}).train()
    video = torch.randn(2, 8, 3, 32, 32)
    ids = actionclip.tokenize(["moving left", "growing"])

    def run():
        model.zero_grad()
        v, t = model(video, ids)
        (v.square().sum() + t.square().sum()).backward()
        return v.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    v1, g1 = run()
    model.set_grad_checkpointing(True)
    v2, g2 = run()
    assert torch.allclose(v1, v2, atol=1e-6)
    assert g1.keys() == g2.keys() and len(g1) > 30
    assert all(torch.allclose(g1[n], g2[n], atol=1e-6) for n in g1)


def test_text_encoding_ignores_padding_length():
    """Trimming to the longest prompt gives the same features as running all 77 positions."""
    torch.manual_seed(0)
    model = actionclip.create_model("tiny-8")
    ids = actionclip.tokenize(["air drumming", "Can you recognize the action of air drumming?"])
    with torch.no_grad():
        trimmed = model.encode_text(ids)
        # run the tower by hand on the full context (no trimming) as the reference
        x = model.text.token_embedding(ids) + model.text.positional_embedding
        x = model.text.ln_final(model.text.transformer(x, causal=True))
        full = x[torch.arange(2), ids.argmax(-1)] @ model.text.text_projection
    assert torch.allclose(trimmed, full, atol=1e-5)


def test_trim_padding_keeps_the_longest_prompt_and_the_model_compiles_whole():
    """Host-side trimming cuts exactly the common padding; the towers have no data-dependent step, so
    ``torch.compile`` captures the whole model in one graph (a ``.item()`` would also stall a GPU every forward)."""
    ids = actionclip.tokenize(["air drumming", "Can you recognize the action of air drumming?"])
    trimmed = actionclip.trim_padding(ids)
    longest = int((ids != 0).sum(dim=1).max())
    assert trimmed.shape == (2, longest) and torch.equal(trimmed, ids[:, :longest])
    assert actionclip.trim_padding(ids[:0]).shape == (0, 77)
    model = actionclip.create_model("tiny-8").eval()
    with torch.no_grad():
        assert torch.allclose(model.encode_text(trimmed), model.encode_text(ids), atol=1e-5)
        video = torch.randn(2, model.num_frames, 3, model.image_size, model.image_size)
        explained = torch._dynamo.explain(model)(video, ids)
    assert explained.graph_break_count == 0, [b.reason for b in explained.break_reasons]


def test_temporal_order_matters_only_for_temporal_fusions():
    torch.manual_seed(0)
    video = torch.randn(1, 8, 3, 32, 32)
    reversed_video = video.flip(1)
    for fusion, order_sensitive in (("meanP", False), ("Transf", True), ("Conv1D", True), ("LSTM", True)):
        model = actionclip.create_model("tiny-8", fusion={"kind": fusion}, vision={"image_size": 32})
        with torch.no_grad():
            a, b = model.encode_video(video), model.encode_video(reversed_video)
        assert (not torch.allclose(a, b, atol=1e-5)) == order_sensitive, fusion


def test_conv1d_is_a_temporal_shift_at_init():
    model = actionclip.create_model("tiny-8", fusion={"kind": "Conv1D"})
    x = torch.randn(1, 4, 128)
    y = model.fusion.shift(x.transpose(1, 2)).transpose(1, 2)
    assert torch.allclose(y[0, 1:, :32], x[0, :-1, :32])  # first quarter looks at t-1
    assert torch.allclose(y[0, :, 32:96], x[0, :, 32:96])  # middle half is the identity
    assert torch.allclose(y[0, :-1, 96:], x[0, 1:, 96:])  # last quarter looks at t+1


def test_zero_shot_scoring_and_text_cache():
    torch.manual_seed(0)
    model = actionclip.create_model("tiny-8", vision={"image_size": 32})
    video = torch.randn(3, 8, 3, 32, 32)
    labels = ["moving left", "moving right", "growing"]
    probs = actionclip.zero_shot_probs(model, video, labels)
    assert probs.shape == (3, 3) and torch.allclose(probs.sum(-1), torch.ones(3), atol=1e-5)
    feats = actionclip.encode_prompts(model, labels)
    assert feats.shape == (16, 3, 128)
    assert actionclip.encode_prompts(model, labels) is feats  # cached
    # template-major layout: row (k, c) is template k applied to label c
    ids = actionclip.tokenize([actionclip.TEMPLATES[5].format(labels[2])])
    with torch.no_grad():
        one = torch.nn.functional.normalize(model.encode_text(ids), dim=-1)[0]
    assert torch.allclose(feats[5, 2], one, atol=1e-5)
    clip_probs = actionclip.zero_shot_probs(model, video, labels, ensemble="clip")
    assert torch.allclose(clip_probs.sum(-1), torch.ones(3), atol=1e-5)
    # an optimiser step invalidates the cache
    with torch.no_grad():
        model.text.text_projection.add_(0.1)
    assert actionclip.encode_prompts(model, labels) is not feats
    # fused optimiser kernels do not bump version counters; a train()/eval() round trip clears the cache
    cached = actionclip.encode_prompts(model, labels)
    opt = torch.optim.AdamW(model.text.parameters(), lr=0.1, fused=True)
    model.train()
    model.text.text_projection.sum().backward()
    opt.step()
    model.eval()
    fresh = actionclip.encode_prompts(model, labels)
    assert fresh is not cached and not torch.allclose(fresh, cached)


def test_prompt_errors():
    model = actionclip.create_model("tiny-8", vision={"image_size": 32})
    video = torch.randn(1, 8, 3, 32, 32)
    with pytest.raises(actionclip.PromptError, match="empty"):
        actionclip.zero_shot_probs(model, video, [])
    with pytest.raises(actionclip.PromptError, match="placeholder"):
        actionclip.zero_shot_probs(model, video, ["a"], templates=["no placeholder"])


def test_kinetics_labels_ship_with_the_package():
    labels = actionclip.kinetics400_labels()
    assert len(labels) == 400 and labels[0] == "abseiling" and labels[1] == "air drumming"
    assert actionclip.TEMPLATES[0] == "a photo of action {}" and len(actionclip.TEMPLATES) == 16


@pytest.mark.parametrize("preset", ["tiny-8", "tiny-8-32px"])
def test_random_towers_tell_inputs_apart(preset):
    """CLIP's initialisation: a random tower's features differ from image to image and from prompt to prompt (mean
    pairwise cosine ~0.9 and ~0.76 here; timm's std-0.02 rule gave ~0.998 on such frames, which stalls training from
    scratch, and PyTorch's default block init ~0.89 on these prompts)."""
    import numpy as np
    import torch.nn.functional as F

    from actionclip.data import normalize_video
    from actionclip.data.synthetic import render_clip

    torch.manual_seed(0)
    model = actionclip.load(preset).eval()
    size = model.image_size
    rng = np.random.default_rng(0)
    frames = np.stack([render_clip(a, "circle", "red", "small", 2, size, 6.0, rng)[0]
                       for a in ("growing", "moving left", "rotating", "blinking") * 4])
    images = normalize_video(torch.from_numpy(frames).permute(0, 3, 1, 2))
    prompts = actionclip.tokenize([f"a video of {c}." for c in ("moving left", "growing", "rotating", "blinking")])
    off_image, off_text = ~torch.eye(16, dtype=torch.bool), ~torch.eye(4, dtype=torch.bool)
    with torch.no_grad():
        f = F.normalize(model.encode_image(images), dim=-1)
        t = F.normalize(model.encode_text(prompts), dim=-1)
    assert (f @ f.t())[off_image].mean() < 0.97
    assert (t @ t.t())[off_text].mean() < 0.85
