"""ModelPicker: which network is explained, as a family and a depth/variant dropdown (torchvision's
families, and "your model" for the networks given to the Explorer)."""
from __future__ import annotations

import ipywidgets as widgets

from ..engine.models import FAMILIES
from .common import View

#: the family of the models given to the Explorer (their weights label: "own")
YOURS = "your model"


class ModelPicker(View):
    """Choosing a variant sets ``state.model_name`` and its weights: ``weights`` for torchvision's models, the
    given model's own for ``yours`` ({name: weights label}). Choosing a family chooses its first variant."""

    observes = ("model_name", "weights")

    def __init__(self, state, weights: str = "auto", yours: dict[str, str] | None = None):
        self.weights, self.yours = weights, dict(yours or {})
        self.families = {**({YOURS: tuple(self.yours)} if self.yours else {}), **FAMILIES}
        self.family = widgets.Dropdown(options=list(self.families), description="model",
                                       layout=widgets.Layout(width="200px"), style={"description_width": "45px"})
        self.variant = widgets.Dropdown(layout=widgets.Layout(width="160px"))
        self.family.observe(self._family_chosen, "value")
        self.variant.observe(self._variant_chosen, "value")
        super().__init__(state, [widgets.HBox([self.family, self.variant])])
        self.add_class("lrp-model-picker")
        self.refresh()

    def _family_chosen(self, change) -> None:
        if change["new"] and not self.syncing:
            self._choose(self.families[change["new"]][0])

    def _variant_chosen(self, change) -> None:
        if change["new"] and not self.syncing:
            self._choose(change["new"])

    def _choose(self, name: str) -> None:
        weights = self.yours[name] if self.family.value == YOURS else self.weights
        with self.state.hold_trait_notifications():
            self.state.model_name, self.state.weights = name, weights

    def render(self) -> None:
        """Both dropdowns show the current request's model."""
        state = self.state
        family = YOURS if self.yours.get(state.model_name) == state.weights else next(
            (family for family, names in FAMILIES.items() if state.model_name in names), None)
        variants = list(self.families.get(family, ()))
        with self.quietly():
            self.family.value = family
            if list(self.variant.options) != variants:
                self.variant.options = variants
            self.variant.value = state.model_name if state.model_name in variants else None
