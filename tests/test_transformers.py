"""Vision transformers: attention with its weights held constant (CP-LRP), LayerNorm with σ held constant, GELU by the
identity rule — equal to LXT's patches of torchvision's ViT (input × gradient under LRP-0), by hand on tiny attention
blocks, and what is not covered refused in one line."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import VisionTransformer

from lrp_widgets.engine import Explainer
from lrp_widgets.errors import ModelError

from .peers import lxt_relevance

pytest.importorskip("lxt", reason="the transformer tests compare with LXT: pip install --no-deps lxt")


def randomised_head(model: VisionTransformer) -> VisionTransformer:
    """torchvision zero-initialises the ViT's head (every logit would be 0): random weights and biases there."""
    with torch.no_grad():
        model.heads.head.weight.normal_(0, 0.05)
        model.heads.head.bias.normal_(0, 0.05)
    return model.eval()


class UserTransformer(nn.Module):
    """A user's own ViT: patch embedding, class token, position embedding, pre-norm blocks of
    nn.MultiheadAttention and a GELU MLP, a head on the class token (``batch_first=False``: sequence-first
    attention, the batch moved to the second dimension and back)."""

    def __init__(self, dim: int = 24, heads: int = 3, blocks: int = 2, classes: int = 7, patch: int = 8, size: int = 32,
                 batch_first: bool = True):
        super().__init__()
        self.embed = nn.Conv2d(3, dim, patch, patch)
        self.token = nn.Parameter(torch.randn(1, 1, dim) * 0.1)
        self.position = nn.Parameter(torch.randn(1, (size // patch) ** 2 + 1, dim) * 0.1)
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(2 * blocks))
        self.attention = nn.ModuleList(nn.MultiheadAttention(dim, heads, batch_first=batch_first) for _ in range(blocks))
        self.batch_first = batch_first
        self.mlps = nn.ModuleList(nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
                                  for _ in range(blocks))
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        x = self.embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.token.expand(x.shape[0], -1, -1), x], dim=1) + self.position
        for i, (attention, mlp) in enumerate(zip(self.attention, self.mlps)):
            h = self.norms[2 * i](x)
            if self.batch_first:
                x = x + attention(h, h, h, need_weights=False)[0]
            else:
                h = h.transpose(0, 1)
                x = x + attention(h, h, h, need_weights=False)[0].transpose(0, 1)
            x = x + mlp(self.norms[2 * i + 1](x))
        return self.head(x[:, 0])


def assert_equal_to_lxt(model: nn.Module, x: torch.Tensor) -> None:
    explanation = Explainer(model, "zero").explain(x)
    ours = explanation.relevances["input"]
    theirs = lxt_relevance(model, x, int(explanation.targets[0]))
    assert float((ours - theirs).abs().max()) <= 1e-3 * float(theirs.abs().max())
    assert float(torch.corrcoef(torch.stack([ours.flatten(), theirs.flatten()]))[0, 1]) >= 0.9999


def test_torchvision_vit_equals_lxt():
    torch.manual_seed(0)
    model = randomised_head(VisionTransformer(image_size=32, patch_size=8, num_layers=3, num_heads=4, hidden_dim=32,
                                              mlp_dim=64, num_classes=10))
    assert_equal_to_lxt(model, torch.randn(1, 3, 32, 32))


def test_a_users_transformer_equals_lxt():
    torch.manual_seed(1)
    assert_equal_to_lxt(UserTransformer().eval(), torch.randn(1, 3, 32, 32))


class ScaledDotProduct(nn.Module):
    """One head, no projections: ``F.scaled_dot_product_attention(q, k, v)`` on token features, summed to scores."""

    def __init__(self):
        super().__init__()
        self.query, self.key, self.value = nn.Linear(4, 4, bias=False), nn.Linear(4, 4, bias=False), nn.Identity()
        self.head = nn.Linear(4, 2, bias=False)

    def forward(self, x):  # x: (N, T, 4)
        out = F.scaled_dot_product_attention(self.query(x), self.key(x), self.value(x))
        return self.head(out.mean(1))


def test_frozen_attention_by_hand():
    """With A = softmax(q kᵀ/2) held constant, out[s] = Σ_t A[s, t] v[t], and LRP-0 gives v[t] the share
    A[s, t] v[t] / out[s] of R(out[s]) — the queries and keys get nothing; zero biases: relevance is conserved."""
    torch.manual_seed(2)
    model = ScaledDotProduct().eval()
    x = torch.rand(1, 5, 4) + 0.5
    explanation = Explainer(model, "zero").explain(x, 1)
    step = next(step for step in explanation.network.steps if step.role == "attention")
    q, k = model.query(x)[0], model.key(x)[0]
    weights = (q @ k.T / 2).softmax(-1)
    out = weights @ x[0]
    relevance_out = explanation.relevances[step.name][0]
    by_hand = torch.einsum("st,tc,sc->tc", weights, x[0], relevance_out / out)
    assert torch.allclose(explanation.relevances["input"][0], by_hand, atol=1e-6)
    assert float(explanation.relevances["input"].sum()) == pytest.approx(float(explanation.output_relevance[0]), rel=1e-5)


def test_causal_attention_holds_its_mask():
    """is_causal: token s attends to t ≤ s only, so no relevance reaches a later token from an earlier output."""

    class Causal(nn.Module):
        def forward(self, x):
            return F.scaled_dot_product_attention(x, x, x, is_causal=True)[:, 0]

    x = torch.rand(1, 4, 3) + 0.1
    relevance = Explainer(Causal(), "zero").explain(x, 0).relevances["input"]
    assert float(relevance[0, 0].sum()) > 0 and torch.equal(relevance[0, 1:], torch.zeros(3, 3))


@pytest.mark.parametrize("call, message", [
    ("attention(h, h, h, attn_mask=mask)[0]", "only attention without masks"),
    ("attention(h, h, h)[1]", "not its attention weights"),
])
def test_what_attention_cannot_pass_is_refused_in_one_line(call, message):
    class Masked(nn.Module):
        def __init__(self):
            super().__init__()
            self.attention = nn.MultiheadAttention(4, 1, batch_first=True)
            self.head = nn.Linear(4 if "[0]" in call else 3, 2)
            self.register_buffer("mask", torch.zeros(3, 3, dtype=torch.bool))

        def forward(self, x):
            attention, mask, h = self.attention, self.mask, x
            return self.head(eval(call).mean(1))

    with pytest.raises(ModelError, match=message) as error:
        Explainer(Masked().eval(), "zero").explain(torch.rand(1, 3, 4))
    assert "\n" not in str(error.value)


def test_sequence_first_attention_is_refused_with_the_fix():
    with pytest.raises(ModelError, match=r"moves the batch dimension .*batch_first=True") as error:
        Explainer(UserTransformer(batch_first=False).eval(), "zero").explain(torch.randn(1, 3, 32, 32))
    assert "\n" not in str(error.value)


def test_graph_neurons_are_channels_of_the_residual_stream():
    """On a ViT a neuron is a channel of the residual stream (its relevance summed over the tokens). With every
    bias, the class token and the position embedding zero, LRP-0 conserves: the flows out of each neuron add up to
    its relevance, and each block's relevance to the logit."""
    from lrp_widgets.analysis.graph import channel_relevance, neuron_graph
    from lrp_widgets.analysis.threshold import neuron_scores

    torch.manual_seed(3)
    model = randomised_head(VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16,
                                              mlp_dim=32, num_classes=5))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias") or "pos_embedding" in name or "class_token" in name:
                parameter.zero_()
    explanation = Explainer(model, "zero").explain(torch.randn(1, 3, 32, 32))
    blocks = [explanation.network.resolve(f"encoder.layers.encoder_layer_{i}") for i in (0, 1)]
    graph = neuron_graph(explanation, top_n=16, layers=blocks)  # every channel kept: nothing lost between layers
    logit = float(explanation.output_relevance[0])
    for block in blocks:
        relevance = channel_relevance(explanation, block)
        assert relevance.shape == (16,) and float(relevance.sum()) == pytest.approx(logit, rel=1e-4)
        assert neuron_scores(explanation, block).shape == (16,)
    flows = graph.flows[blocks[1], blocks[0]]
    upper = torch.tensor([node.relevance for node in graph.nodes[blocks[1]]])
    assert torch.allclose(flows.sum(1), upper, rtol=1e-4, atol=1e-6 * abs(logit))
    assert explanation.map_layers == blocks  # 17 tokens: the class token and a 4 × 4 grid of patches


def test_the_explorer_on_a_vit_shows_every_view_and_says_why_there_is_no_deconvolution():
    """ViT-B/32 (random weights, its zero head given random weights): graph over the encoder blocks, paths, the
    sweep on the patch grid; a neuron's panel shows its conditional relevance and says why there is no deconvolution."""
    import warnings

    from lrp_widgets.views import Explorer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        explorer = Explorer(model="vit_b_32", weights="random", image="castle", background=False)
    state = explorer.state
    graph = state.result.bundle.graph()
    assert [state.result.bundle.layer_name(layer) for layer in graph.layers[:2]] == ["block 0", "block 1"]
    assert len(state.result.paths) == 5 and state.result.sweep is not None and state.error == ""
    layer = graph.layers[-2]
    state.selected = (layer, graph.nodes[layer][0].index)
    explorer.session.wait()
    neuron = state.result.neuron
    assert neuron.deconvolution is None and neuron.complete and float(neuron.heatmap.abs().sum()) > 0
    assert "no deconvolution: the deconvnet has no step for" in explorer.deconv.label.value and state.error == ""


def test_a_batch_is_explained_image_by_image():
    """The class token, a parameter expanded over the batch: each image of a batch of three gets the relevance it
    gets alone."""
    torch.manual_seed(4)
    model = randomised_head(VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16,
                                              mlp_dim=32, num_classes=5))
    x = torch.randn(3, 3, 32, 32)
    explainer = Explainer(model, "zero")
    together = explainer.explain(x, [0, 3, 4]).relevances["input"]
    for i, target in enumerate((0, 3, 4)):
        alone = explainer.explain(x[i:i + 1], target).relevances["input"]
        assert torch.allclose(together[i:i + 1], alone, atol=1e-6 * float(alone.abs().max()))
