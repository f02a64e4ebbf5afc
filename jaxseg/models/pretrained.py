"""Pretrained PyTorch weights into a registry model: ``load_pretrained(model_name, variables, src)``.

``variables`` is the freshly initialised ``{'params', 'batch_stats'}`` of ``create(model_name,
...)``; ``source`` anything ``weights.load_state_dict`` reads. The conversion follows from the
model and the weights' key layout:

* ``fcn32s``/``fcn16s``/``fcn8s``: torchvision or timm VGG16 classification weights -> the
  ``vgg16`` trunk (``convert.convert_vgg16``: fc6/fc7 convolutionalised, the ImageNet classifier
  unused); the score and upsampling layers stay fresh.
* ``encoder_unet``: a whole smp ``Unet`` (``encoder.*``, ``decoder.*``, ``segmentation_head.*``):
  everything loads; or a torchvision classification ResNet (``conv1``, ``bn1``, ``layerN.*``;
  ``fc.*`` unused) or VGG (``features.*``; ``classifier.*``, timm's ``pre_logits.*``/``head.*``
  unused) -> ``encoder/...``, the decoder and the head fresh.
* ``fcn_resnet50``/``fcn_resnet101``: a torchvision ``fcn_resnetNN`` (``backbone.*``,
  ``classifier.*``, ``aux_classifier.*``: unused when the model has no auxiliary head, which
  stays fresh when the weights lack one); or a torchvision classification ResNet ->
  ``backbone/...``, the heads fresh.

Names map by ``convert.torch_to_flax``; the architecture of the weights (``resnet34``,
``vgg16_bn``, ...) must be the model's (its ``encoder_name``, or the FCN's depth), and
``convert.merge_params`` checks every path and shape. A head for another class count
(``resized_heads``) stays fresh; ``exclude`` keeps more fresh (e.g. ``('segmentation_head_0',)``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping

import numpy as np
from flax import traverse_util

from jaxseg.errors import UserError
from jaxseg.models.convert import FCN_HEADS, convert_vgg16, merge_params, torch_to_flax
from jaxseg.models.weights import load_state_dict, resnet_stages

# (blocks per stage, bottleneck) and 3x3 convolutions -> torchvision's architecture names.
RESNETS = {
    ((2, 2, 2, 2), False): "resnet18",
    ((3, 4, 6, 3), False): "resnet34",
    ((3, 4, 6, 3), True): "resnet50",
    ((3, 4, 23, 3), True): "resnet101",
    ((3, 8, 36, 3), True): "resnet152",
}
VGGS = {8: "vgg11", 10: "vgg13", 13: "vgg16", 16: "vgg19"}
# Classifier heads of classification weights: no counterpart in a segmentation model.
RESNET_HEADS = ("fc",)
VGG_HEADS = ("classifier", "pre_logits", "head")  # torchvision; timm


def _resnet_name(stages: tuple[int, ...], bottleneck: bool) -> str:
    kind = "bottleneck" if bottleneck else "basic-block"
    return RESNETS.get((stages, bottleneck), f"a {kind} ResNet with blocks {stages}")


def _vgg_name(convs: int, batch_norm: bool) -> str:
    if convs in VGGS:
        return VGGS[convs] + ("_bn" if batch_norm else "")
    return f"a VGG with {convs} convolutions" + (" and batch norm" if batch_norm else "")


def weights_architecture(state: Mapping[str, np.ndarray], prefix: str = "") -> str | None:
    """The torchvision ResNet or VGG that ``state``'s keys under ``prefix`` (e.g.
    ``'encoder.'``) describe (``'resnet50'``, ``'vgg16_bn'``, ...); ``None`` for neither."""
    sub = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    if {"conv1.weight", "layer1.0.conv1.weight"} <= set(sub):
        return _resnet_name(*resnet_stages(sub))
    convs = [k for k, v in sub.items() if re.fullmatch(r"features\.\d+\.weight", k) and v.ndim == 4]
    if not convs:
        return None
    return _vgg_name(len(convs), any(re.fullmatch(r"features\.\d+\.running_mean", k) for k in sub))


def model_architecture(params: Mapping, batch_stats: Mapping) -> str:
    """The same name for a Flax ResNet/VGG subtree (``params['encoder']``, ...)."""
    stages = tuple(
        sum(bool(re.fullmatch(rf"layer{s}_\d+", k)) for k in params) for s in range(1, 5)
    )
    if all(stages):
        return _resnet_name(stages, "conv3" in params["layer1_0"])
    convs = [k for k, v in params.items() if k.startswith("features_") and "kernel" in v]
    return _vgg_name(len(convs), any(k.startswith("features_") for k in batch_stats))


def _subtree(variables: Mapping, name: str, model_name: str) -> tuple[Mapping, Mapping]:
    params = variables.get("params", {})
    if name not in params:
        raise UserError(
            f"these variables are not those of {model_name!r}: params has no {name!r} "
            f"(its top level: {sorted(params)[:8]})"
        )
    return params[name], variables.get("batch_stats", {}).get(name, {})


def _check_architecture(got: str | None, expected: str, what: str, fix: str) -> None:
    if got != expected:
        got = got or "of an unrecognised architecture"
        raise UserError(f"the weights are {got} but {what} is {expected}: {fix}")


def _split(state: Mapping, prefixes: Iterable[str]) -> tuple[dict, list[str]]:
    """``state`` without the tensors under ``prefixes``, and those tensors' keys."""
    prefixes = tuple(f"{p}." for p in prefixes)
    kept = {k: v for k, v in state.items() if not k.startswith(prefixes)}
    unused = [k for k in state if k.startswith(prefixes) and not k.endswith("num_batches_tracked")]
    return kept, sorted(unused)


def _not_recognised(state: Mapping, model_name: str, expected: str) -> UserError:
    return UserError(
        f"cannot load a state dict with keys {sorted(state)[:6]}... into {model_name!r}: "
        f"expected {expected}"
    )


# A loader: (state, variables, model_name) -> (converted variables, unused torch keys, paths
# kept fresh).
Converted = tuple[dict, list[str], tuple[str, ...]]


def _fcn_vgg16(state: Mapping, variables: Mapping, model_name: str) -> Converted:
    _subtree(variables, "vgg16", model_name)
    converted, unused = convert_vgg16(state, name="vgg16")
    return converted, unused, FCN_HEADS


def _encoder_unet(state: Mapping, variables: Mapping, model_name: str) -> Converted:
    expected = model_architecture(*_subtree(variables, "encoder", model_name))
    what = f"the model's encoder (encoder_name={expected!r})"

    def check(got):
        fix = f"create the model with encoder_name={got!r}, or load {expected} weights"
        _check_architecture(got, expected, what, fix)

    if any(k.startswith("encoder.") for k in state):  # A whole smp Unet.
        check(weights_architecture(state, "encoder."))
        return torch_to_flax(state), [], ()
    got = weights_architecture(state)
    if got is None:
        raise _not_recognised(
            state,
            model_name,
            "an smp Unet (encoder.*, decoder.*, segmentation_head.*) or a torchvision "
            "ResNet/VGG classification state dict (conv1, layer1.*, ... or features.*)",
        )
    check(got)
    kept, unused = _split(state, RESNET_HEADS if got.startswith("resnet") else VGG_HEADS)
    return (
        torch_to_flax(kept, prefix_map={"": "encoder"}),
        unused,
        ("decoder", "segmentation_head_*"),
    )


def _fcn_resnet(state: Mapping, variables: Mapping, model_name: str) -> Converted:
    expected = model_architecture(*_subtree(variables, "backbone", model_name))
    what = f"{model_name}'s backbone"
    other = {"resnet50": "fcn_resnet50", "resnet101": "fcn_resnet101"}

    def check(got):
        fix = f"use model {other[got]!r}, or " if got in other else "load "
        _check_architecture(got, expected, what, f"{fix}{expected} weights")

    has_aux = "aux_classifier_0" in variables["params"]
    if any(k.startswith("backbone.") for k in state):  # A torchvision segmentation FCN.
        check(weights_architecture(state, "backbone."))
        aux_in_weights = any(k.startswith("aux_classifier.") for k in state)
        kept, unused = _split(state, () if has_aux else ("aux_classifier",))
        fresh = ("aux_classifier_*",) if has_aux and not aux_in_weights else ()
        return torch_to_flax(kept), unused, fresh
    got = weights_architecture(state)
    if got is None:
        raise _not_recognised(
            state,
            model_name,
            "a torchvision fcn_resnet state dict (backbone.*, classifier.*) or a torchvision "
            "ResNet classification state dict (conv1, bn1, layer1.*, ...)",
        )
    check(got)
    kept, unused = _split(state, RESNET_HEADS)
    fresh = ("classifier_*", "aux_classifier_*")
    return torch_to_flax(kept, prefix_map={"": "backbone"}), unused, fresh


LOADERS: dict[str, Callable[[Mapping, Mapping, str], Converted]] = {
    "fcn32s": _fcn_vgg16,
    "fcn16s": _fcn_vgg16,
    "fcn8s": _fcn_vgg16,
    "encoder_unet": _encoder_unet,
    "fcn_resnet50": _fcn_resnet,
    "fcn_resnet101": _fcn_resnet,
}


def resized_heads(target: Mapping, source: Mapping, num_classes: int | None) -> list[str]:
    """Paths (``/``-joined) in both trees whose shapes differ only by the class count: every
    axis that differs is one size in ``source`` and ``num_classes`` in the model (a score
    layer's kernel and bias, an FCN's class-to-class upsampling). Such heads stay fresh when
    fine-tuning for another class count; any other difference is another architecture."""
    if num_classes is None:
        return []
    flat_target = traverse_util.flatten_dict(target, sep="/")
    flat_source = traverse_util.flatten_dict(source, sep="/")
    heads = []
    for path, value in flat_target.items():
        old, new = np.shape(flat_source.get(path, value)), np.shape(value)
        if old == new or len(old) != len(new):
            continue
        pairs = {(a, b) for a, b in zip(old, new) if a != b}
        if len(pairs) == 1 and next(iter(pairs))[1] == num_classes:
            heads.append(path)
    return heads


def _patterns(patterns: Iterable[str], collections: Iterable[str]) -> list[str]:
    """``exclude`` patterns (paths inside a collection) for ``merge_params`` on whole trees."""
    collections = tuple(collections)
    return [
        p if p.split("/")[0] in collections else f"{c}/{p}" for p in patterns for c in collections
    ]


def load_pretrained(
    model_name: str,
    variables: Mapping,
    source,
    *,
    exclude: Iterable[str] = (),
    num_classes: int | None = None,
) -> tuple[dict, dict]:
    """``variables`` of the registry model ``model_name`` filled from PyTorch weights.

    Args:
      model_name: a ``jaxseg.models.MODELS`` name that ``LOADERS`` supports.
      variables: the model's freshly initialised ``{'params': ..., 'batch_stats': ...}``.
      source: anything ``load_state_dict`` reads (a file, ``hf-hub:ORG/NAME``, a mapping).
      exclude: glob patterns of Flax paths inside a collection (``'segmentation_head_0'``,
        ``'classifier_4'``) to keep fresh, dropping the weights' tensors there.
      num_classes: the model's class count: heads the weights have for another count stay
        fresh (``resized_heads``); ``None``: such a head is an error.

    Returns:
      ``(variables, report)``: the filled variables (same collections) and ``report`` with
      sorted lists ``'loaded'`` and ``'fresh'`` (paths such as ``params/encoder/conv1/kernel``)
      and ``'dropped'``: the weights' tensors not loaded, converted paths ``exclude`` matched
      and source keys without a counterpart (a classifier's ``fc.weight``, ...; batch norms'
      ``num_batches_tracked`` are not listed).

    Raises:
      UserError (a ValueError): an unsupported model, unreadable or unrecognised weights,
        weights of another architecture (both named), or paths/shapes that do not fit.
    """
    if model_name not in LOADERS:
        raise UserError(
            f"no pretrained weights can be loaded into model {model_name!r}; supported: "
            f"{', '.join(LOADERS)}"
        )
    state = load_state_dict(source)
    converted, unused, fresh = LOADERS[model_name](state, variables, model_name)
    heads = resized_heads(variables, converted, num_classes)
    patterns = [*_patterns((*exclude, *fresh), variables), *heads]
    merged, report = merge_params(variables, converted, exclude=patterns)
    report["dropped"] = sorted(report["dropped"] + unused)
    return merged, report
