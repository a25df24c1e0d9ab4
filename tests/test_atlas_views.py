"""The atlas in the Explorer: the selected neuron's reference strip is the atlas's top images of that neuron under the
chosen statistic, cropped to its receptive field; a name opens its image; another model is refused in one line."""
from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from torchvision.models import vgg11

from lrp_widgets.atlas import Atlas, build_atlas
from lrp_widgets.atlas.thumbnails import receptive_fields
from lrp_widgets.engine.models import load_model
from lrp_widgets.engine.network import trace
from lrp_widgets.errors import ModelError
from lrp_widgets.views import Explorer

from .atlas_folders import case_study_folder

LAYERS = ["features.13", "features.18"]  # VGG-11's conv4_2 and conv5_2


@pytest.fixture(scope="module")
def atlas(tmp_path_factory) -> Path:
    folder = case_study_folder(tmp_path_factory.mktemp("folder"), per_class=2, bad=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load_model("vgg11", "random")
    out = tmp_path_factory.mktemp("atlas") / "atlas"
    build_atlas(folder, model, out, LAYERS, k=10, progress=False, workers=0)
    return out


@pytest.fixture
def explorer(atlas):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Explorer(atlas=atlas, image="castle", background=False)


def titles(explorer) -> list[str]:
    value = explorer.references.strip.value
    return [part.split('"', 1)[0] for part in value.split('title="')[1:]]


def test_the_strip_shows_the_atlas_top_images_of_the_selected_neuron(explorer, atlas):
    state = explorer.state
    assert (state.model_name, state.weights) == ("vgg11", "random")  # the atlas's model and weights
    for channel in (3, 7):
        state.selected = ("features.18", channel)
        explorer.session.wait()
        expected = [row["image"] for row in Atlas.open(atlas).references("features.18", channel, "relevance_sum")[:8]]
        assert titles(explorer) == expected and len(set(expected)) == 8
        assert f"neuron <b>{channel}</b> of features.18 has the highest relevance" in explorer.references.caption.value
    state.statistic = "activation_max"
    explorer.session.wait()
    expected = [row["image"] for row in Atlas.open(atlas).references("features.18", 7, "activation_max")[:8]]
    assert titles(explorer) == expected and "activation at its strongest position" in explorer.references.caption.value
    assert explorer.references.statistic.value == "activation · max"


def test_a_name_in_the_strip_opens_its_image(explorer):
    state = explorer.state
    state.selected = ("features.13", 2)
    explorer.session.wait()
    first = explorer.references.opener.options[0]
    explorer.references.opener.value = first[1]
    explorer.session.wait()
    assert state.image_name == first[0].rsplit("/", 1)[-1] and state.selected == () and state.error == ""


def test_a_layer_the_atlas_lacks_is_said(explorer):
    explorer.state.selected = ("features.0", 1)
    explorer.session.wait()
    assert "the atlas has no reference images at this layer (it has features.13, features.18)" in \
        explorer.references.caption.value and titles(explorer) == []


def test_receptive_fields_follow_the_kernels_and_strides():
    """VGG-11, by hand: each 3×3 conv adds 2 × the jump, each 2×2 pool 1 × the jump and doubles it — conv1 3,
    pool 4 (jump 2), conv 8, pool 10 (4), conv 18, 26, pool 30 (8), conv 46, conv4_2 62, pool 70 (16), conv 102,
    conv5_2 134; a linear layer sees everything."""
    fields = receptive_fields(trace(vgg11()))
    assert (fields["features.13"], fields["features.18"], fields["classifier.0"]) == (62, 134, float("inf"))


def test_another_model_than_the_atlas_is_refused_in_one_line(atlas):
    with pytest.raises(ModelError, match="is of vgg11 with random weights, not vgg16") as error:
        Explorer(atlas=atlas, model="vgg16", background=False)
    assert "\n" not in str(error.value)


def test_a_thumbnail_is_the_receptive_field_around_the_maximum(atlas):
    """conv5_2 (14 × 14, field 134 px of 224): the crop centred on the maximum's cell, moved inside the picture."""
    import io

    import numpy as np
    from PIL import Image

    from lrp_widgets.atlas.thumbnails import ReferenceImages
    from lrp_widgets.engine.images import display_image, open_image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load_model("vgg11", "random")
    images = ReferenceImages(Atlas.open(atlas))
    channel, row = next((c, row) for c in range(512) for row in Atlas.open(atlas).references("features.18", c,
                        "relevance_max")[:1] if 5 <= row["y"] <= 8 and 5 <= row["x"] <= 8)  # a crop not at an edge
    thumbnail = images.strip(model, "features.18", channel, "relevance_max", k=1).thumbnails[0]
    centre_y, centre_x = (row["y"] + 0.5) * 16, (row["x"] + 0.5) * 16
    top, left = (int(min(max(c - 67, 0), 224 - 134)) for c in (centre_y, centre_x))
    picture = display_image(open_image(Path(Atlas.open(atlas).info["folder"]) / row["image"]))
    expected = np.asarray(Image.fromarray(picture[top:top + 134, left:left + 134]).resize((96, 96)))
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(thumbnail.png))), expected)
