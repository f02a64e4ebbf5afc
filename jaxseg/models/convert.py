"""PyTorch state dicts (``{name: np.ndarray}``, see ``weights.py``) to jaxseg's Flax variables.

Layouts. PyTorch convolutions store ``[out, in, kh, kw]`` and Flax ``[kh, kw, in, out]``; both
compute a cross-correlation, so the kernel is a transpose, no flip. A ``Linear`` stores
``[out, in]`` and ``nn.Dense`` ``[in, out]``. Batch norm: ``weight``/``bias`` are Flax's
``scale``/``bias`` params, ``running_mean``/``running_var`` its ``mean``/``var`` batch stats
(PyTorch's eps is 1e-5, as Flax's default; ``num_batches_tracked`` has no Flax counterpart).
``torch_to_flax`` applies these by name to a whole state dict (``jaxseg.models.resnet``'s rule).

VGG16 to FCN (Long et al. 2015, section 3.1): fc6 and fc7 are VGG's first two classifier layers
"convolutionalised". torchvision flattens pool5 ``[512, 7, 7]`` in (C, H, W) order, so row ``o`` of
``classifier.0.weight`` ``[4096, 25088]`` reshaped to ``[512, 7, 7]`` is the ``[in, kh, kw]``
filter of output channel ``o`` of a 7x7 convolution; ``classifier.3`` becomes a 1x1 convolution.
The 1000-class ``classifier.6`` is dropped. timm's VGG16 stores fc6/fc7 as convolutions already
(``pre_logits.fc1``/``fc2``) and its classifier as ``head.fc``.

``merge_params`` puts converted tensors into a freshly initialised tree by path: everything the
model has is loaded or explicitly kept fresh (``exclude``), everything converted is loaded or
explicitly dropped, and shapes must agree; otherwise one ``UserError`` lists every problem.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping

import jax
import numpy as np
from flax import traverse_util

from jaxseg.errors import UserError
from jaxseg.models.vgg import VGG16_BLOCKS
from jaxseg.models.weights import detect_layout, load_state_dict

# The FCN's own layers (score_fr, score_pool4/3, upscore2, upscore_pool4): not in VGG16 weights.
FCN_HEADS = ("score_*", "upscore*")


class StateReader:
    """A state dict that records which tensors were taken or dropped, so that a converter can
    check it accounted for every one (``finish``)."""

    def __init__(self, state: Mapping[str, np.ndarray]):
        self.state = state
        self.taken: set[str] = set()
        self.dropped: list[str] = []

    def __contains__(self, key: str) -> bool:
        return key in self.state

    def take(self, key: str) -> np.ndarray:
        if key not in self.state:
            near = sorted(k for k in self.state if k.split(".")[0] == key.split(".")[0])[:6]
            raise UserError(f"tensor {key!r} is missing from the state dict (similar keys: {near})")
        self.taken.add(key)
        return np.asarray(self.state[key])

    def drop(self, prefix: str) -> None:
        """Marks the tensors ``prefix.*`` (or named ``prefix``) as deliberately unused."""
        self.dropped += [k for k in self.state if k == prefix or k.startswith(prefix + ".")]

    def finish(self) -> list[str]:
        """Returns the dropped keys; raises if a tensor was neither taken nor dropped."""
        unused = sorted(set(self.state) - self.taken - set(self.dropped))
        if unused:
            raise UserError(
                f"{len(unused)} tensor(s) of the state dict have no place in the model: "
                + ", ".join(f"{k} {tuple(np.shape(self.state[k]))}" for k in unused[:10])
            )
        return sorted(self.dropped)


def _take(state, key: str) -> np.ndarray:
    return state.take(key) if isinstance(state, StateReader) else StateReader(state).take(key)


def conv_kernel(w: np.ndarray) -> np.ndarray:
    """PyTorch ``[out, in, kh, kw]`` (or a ``Linear``'s ``[out, in]``, as 1x1) to Flax HWIO."""
    w = np.asarray(w)
    if w.ndim == 2:
        w = w[:, :, None, None]
    if w.ndim != 4:
        raise UserError(f"a convolution weight has 4 dimensions (or 2 for a Linear); got {w.shape}")
    return np.ascontiguousarray(w.transpose(2, 3, 1, 0))


def linear_to_conv_kernel(w: np.ndarray, kernel_size: tuple[int, int]) -> np.ndarray:
    """A ``Linear`` ``[out, C*kh*kw]`` applied to a flattened ``[C, kh, kw]`` map, as the HWIO
    kernel of the ``kh x kw`` unpadded convolution computing the same on each window."""
    w = np.asarray(w)
    kh, kw = kernel_size
    if w.ndim == 4:  # Already a convolution (e.g. timm's pre_logits.fc1).
        if w.shape[2:] != (kh, kw):
            raise UserError(f"expected a {kh}x{kw} convolution weight; got {w.shape}")
        return conv_kernel(w)
    if w.ndim != 2 or w.shape[1] % (kh * kw):
        raise UserError(f"a Linear weight [out, C*{kh}*{kw}] cannot be {w.shape}")
    return conv_kernel(w.reshape(w.shape[0], w.shape[1] // (kh * kw), kh, kw))


def dense_kernel(w: np.ndarray) -> np.ndarray:
    """PyTorch ``Linear`` ``[out, in]`` to Flax ``nn.Dense`` ``[in, out]``."""
    w = np.asarray(w)
    if w.ndim != 2:
        raise UserError(f"a Linear weight has 2 dimensions; got {w.shape}")
    return np.ascontiguousarray(w.T)


def conv(state, prefix: str, *, kernel_size: tuple[int, int] | None = None) -> dict:
    """``{'kernel', 'bias'}`` (bias only if present) of the convolution ``prefix``. With
    ``kernel_size``, a ``Linear`` weight is convolutionalised to that window."""
    w = _take(state, f"{prefix}.weight")
    kernel = conv_kernel(w) if kernel_size is None else linear_to_conv_kernel(w, kernel_size)
    params = {"kernel": kernel}
    if f"{prefix}.bias" in state:
        params["bias"] = _take(state, f"{prefix}.bias")
    return params


def dense(state, prefix: str) -> dict:
    """``{'kernel', 'bias'}`` of the ``Linear`` ``prefix`` for ``nn.Dense``."""
    params = {"kernel": dense_kernel(_take(state, f"{prefix}.weight"))}
    if f"{prefix}.bias" in state:
        params["bias"] = _take(state, f"{prefix}.bias")
    return params


def batch_norm(state, prefix: str) -> tuple[dict, dict]:
    """``({'scale', 'bias'}, {'mean', 'var'})``: the params and batch stats of ``nn.BatchNorm``
    from ``prefix.weight/bias/running_mean/running_var`` (``num_batches_tracked`` dropped)."""
    params = {"scale": _take(state, f"{prefix}.weight"), "bias": _take(state, f"{prefix}.bias")}
    stats = {stat: _take(state, f"{prefix}.running_{stat}") for stat in ("mean", "var")}
    if isinstance(state, StateReader):
        state.drop(f"{prefix}.num_batches_tracked")
    return params, stats


# Tensor name -> (collection, Flax leaf); a ``weight`` of rank >= 2 is a ``kernel`` instead.
TORCH_LEAVES = {"weight": ("params", "scale"), "bias": ("params", "bias"),
                "running_mean": ("batch_stats", "mean"), "running_var": ("batch_stats", "var")}  # fmt: skip


def torch_to_flax(state: Mapping[str, np.ndarray], *, prefix_map=None) -> dict:
    """A PyTorch state dict as ``{'params': tree, 'batch_stats': tree}``, by names alone.

    The rule: split the key on ``.``; join every all-digit module component to the one before it
    with ``_`` (``layer1.0.downsample.1`` -> ``layer1_0/downsample_1``); a ``weight`` of rank >= 3
    (convolution ``[O, I, *window]``) -> ``kernel`` ``[*window, I, O]``, of rank 2 (``Linear``)
    -> ``nn.Dense``'s ``kernel`` ``[in, out]``, of rank 1 (a norm) -> ``scale``; ``bias`` ->
    ``bias``; ``running_mean``/``running_var`` -> ``batch_stats`` ``mean``/``var``;
    ``num_batches_tracked`` is dropped. ``prefix_map`` (``{torch module prefix: Flax path}``,
    ``''`` matching every key; the longest match wins) relocates keys first, e.g.
    ``{'': 'encoder'}``: ``conv1.weight`` -> ``params/encoder/conv1/kernel``.

    Raises:
      UserError: a tensor name outside the rule, or two keys mapping to one Flax path.
    """
    flat: dict[tuple[str, ...], np.ndarray] = {}
    prefix_map = dict(prefix_map or {})
    for key, value in sorted(state.items()):
        prefix = max((p for p in prefix_map if p == "" or key.startswith(p + ".")), key=len,
                     default=None)  # fmt: skip
        name = key if prefix is None else ".".join(filter(None, (
            prefix_map[prefix].replace("/", "."), key[len(prefix) :].lstrip("."))))  # fmt: skip
        *path, leaf = re.sub(r"\.(\d+)(?=\.)", r"_\1", name).split(".")
        value = np.asarray(value)
        if leaf == "weight" and value.ndim >= 2:  # OI[window] -> [window]IO; a Linear's OI -> IO.
            collection, leaf = "params", "kernel"
            value = np.ascontiguousarray(np.moveaxis(value, (0, 1), (-1, -2)))
        elif leaf in TORCH_LEAVES:
            collection, leaf = TORCH_LEAVES[leaf]
        elif leaf == "num_batches_tracked":
            continue
        else:
            raise UserError(f"tensor {key!r}: {leaf!r} is no weight, bias or running statistic")
        if (collection, *path, leaf) in flat:
            raise UserError(f"two tensors map to {'/'.join([collection, *path, leaf])} ({key!r})")
        flat[(collection, *path, leaf)] = value
    tree = traverse_util.unflatten_dict(flat)
    return {"params": tree.get("params", {}), "batch_stats": tree.get("batch_stats", {})}


def convert_vgg16(
    state: Mapping[str, np.ndarray], *, name: str = "vgg16"
) -> tuple[dict, list[str]]:
    """``vgg16_to_fcn``, also returning the source keys it dropped (the ImageNet classifier)."""
    layout = detect_layout(state)
    if layout not in ("torchvision_vgg16", "timm_vgg16"):
        raise UserError(f"expected VGG16 weights for the FCN trunk; got a {layout} state dict")
    reader = StateReader(state)
    indices = sorted(
        int(k.split(".")[1]) for k in state if k.startswith("features.") and k.endswith(".weight")
    )
    names = [
        f"conv{b}_{i}" for b, (n, _) in enumerate(VGG16_BLOCKS, start=1) for i in range(1, n + 1)
    ]
    trunk = {layer: conv(reader, f"features.{index}") for layer, index in zip(names, indices)}
    if layout == "torchvision_vgg16":
        fc6, fc7, classifier = "classifier.0", "classifier.3", "classifier.6"
    else:
        fc6, fc7, classifier = "pre_logits.fc1", "pre_logits.fc2", "head.fc"
    trunk["fc6"] = conv(reader, fc6, kernel_size=(7, 7))
    trunk["fc7"] = conv(reader, fc7, kernel_size=(1, 1))
    reader.drop(classifier)
    return {"params": {name: trunk}}, reader.finish()


def vgg16_to_fcn(state: Mapping[str, np.ndarray], *, name: str = "vgg16") -> dict:
    """torchvision's or timm's VGG16 state dict as ``{'params': {name: {conv1_1 ... fc7}}}``,
    the parameters of FCN's ``VGG16`` trunk (``params['vgg16']`` of an FCN).

    fc6 is ``classifier.0`` as a 7x7 convolution, fc7 ``classifier.3`` as 1x1; the ImageNet
    classifier (``classifier.6``/``head.fc``) is dropped (``convert_vgg16`` lists it).

    Raises:
      UserError: not VGG16, a missing tensor, or a tensor the trunk has no place for.
    """
    return convert_vgg16(state, name=name)[0]


def _flatten(tree: Mapping) -> dict[str, object]:
    return traverse_util.flatten_dict(tree, sep="/")


def _unflatten(flat: Mapping[str, object]) -> dict:
    return traverse_util.unflatten_dict(dict(flat), sep="/")


def _matches(path: str, patterns: Iterable[str]) -> bool:
    return any(
        fnmatch.fnmatchcase(path, p) or fnmatch.fnmatchcase(path, p + "/*") for p in patterns
    )


def merge_params(target_params: Mapping, converted: Mapping, *, exclude: Iterable[str] = ()):
    """Puts ``converted`` tensors into ``target_params`` (a freshly initialised tree) by path.

    Paths are ``/``-joined keys (``vgg16/conv1_1/kernel``). ``exclude`` holds glob patterns of
    paths (or of their modules, e.g. ``'score_*'``): a target leaf they match may stay fresh, a
    converted one they match is dropped. Loaded values take the target leaf's dtype (and, for a
    ``jax.Array``, its sharding).

    Returns:
      ``(params, report)``: the merged tree, and ``report`` with sorted path lists ``'loaded'``,
      ``'fresh'`` (kept as initialised) and ``'dropped'`` (converted but excluded).

    Raises:
      UserError (a ValueError): naming every target leaf neither converted nor excluded
        (missing), converted leaf the target lacks (extra), and shape that differs.
    """
    exclude = tuple(exclude)
    target, source = _flatten(target_params), _flatten(converted)
    merged, report = dict(target), {"loaded": [], "fresh": [], "dropped": []}
    problems = []
    for path, value in sorted(source.items()):
        if _matches(path, exclude):
            report["dropped"].append(path)
        elif path not in target:
            problems.append(f"extra: {path} {tuple(np.shape(value))} has no place in the model")
        elif tuple(np.shape(value)) != tuple(np.shape(target[path])):
            problems.append(
                f"shape: {path} is {tuple(np.shape(value))} in the weights but "
                f"{tuple(np.shape(target[path]))} in the model"
            )
        else:
            here = target[path]
            value = np.asarray(value, dtype=here.dtype)
            sharding = getattr(here, "sharding", None) if isinstance(here, jax.Array) else None
            merged[path] = jax.device_put(value, sharding) if sharding is not None else value
            report["loaded"].append(path)
    for path, value in sorted(target.items()):
        if path in source and not _matches(path, exclude):
            continue
        if _matches(path, exclude):
            report["fresh"].append(path)
        else:
            problems.append(f"missing: {path} {tuple(np.shape(value))} is not in the weights")
    if problems:
        shown = problems[:12] + (
            [f"... and {len(problems) - 12} more"] if len(problems) > 12 else []
        )
        if not set(source) & set(target):
            shown.insert(0, "no path in common: are both trees at the same level (params)?")
        raise UserError(
            f"the weights do not fit the model ({len(problems)} problem(s); config.init_exclude "
            "keeps a model layer fresh and drops the weights' tensor there): " + "; ".join(shown)
        )
    return _unflatten(merged), report


def load_fcn_vgg16(params: Mapping, source, *, name: str = "vgg16") -> tuple[dict, dict]:
    """An FCN's freshly initialised ``params`` with its VGG16 trunk loaded from ``source`` (any
    ``load_state_dict`` source or a loaded state dict); the score and upsampling layers stay
    fresh. ``report`` is ``merge_params``' plus ``'unused'``: the source keys dropped."""
    state = load_state_dict(source)
    converted, unused = convert_vgg16(state, name=name)
    merged, report = merge_params(params, converted["params"], exclude=FCN_HEADS)
    report["unused"] = unused
    return merged, report
