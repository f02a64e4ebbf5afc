"""Reading pretrained PyTorch weights without PyTorch: state dicts as ``{name: np.ndarray}``.

``load_state_dict(source)`` reads the files users have:

* ``*.safetensors`` through safetensors' NumPy API (no PyTorch);
* ``*.npz`` (``np.savez`` of a state dict);
* ``*.pth``, ``*.pt``, ``*.bin`` (``torch.save``) only where PyTorch is installed; otherwise the
  error says how to convert the file to safetensors once, on a machine that has it;
* ``hf-hub:ORG/NAME`` (e.g. ``hf-hub:timm/vgg16.tv_in1k``), fetched by ``huggingface_hub`` into
  its cache (``$HF_HUB_CACHE/models--ORG--NAME/snapshots/<rev>/``) and read from there offline
  (``HF_HUB_OFFLINE=1``): ``model.safetensors``, else ``pytorch_model.bin``.

Wrappers are unwrapped (a ``state_dict``/``model`` entry of a ``.pth`` checkpoint; a ``module.``
or ``model.`` prefix every key has). ``detect_layout`` names the layout from the keys:
``torchvision_vgg16``, ``timm_vgg16`` or ``torchvision_resnet`` (timm's ResNets share it).
"""

from __future__ import annotations

import functools
import json
import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import ml_dtypes
import numpy as np

from jaxseg.errors import UserError
from jaxseg.models.hub import HUB_PREFIX, WeightsNotFound, hub_file

__all__ = ["WeightsNotFound", "detect_layout", "hub_file", "load_state_dict", "resnet_stages"]

TORCH_SUFFIXES = (".pth", ".pt", ".bin")
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module")
KEY_PREFIXES = ("module.", "model.")

# Safetensors dtype names. safetensors.numpy raises TypeError on those NumPy lacks (bfloat16,
# float8); files holding them are read here from the raw layout, with ml_dtypes' types.
_DTYPES = {
    "BF16": ml_dtypes.bfloat16,
    "F8_E4M3": ml_dtypes.float8_e4m3fn,
    "F8_E5M2": ml_dtypes.float8_e5m2,
    **{f"F{b}": f"float{b}" for b in (16, 32, 64)},
    **{f"I{b}": f"int{b}" for b in (8, 16, 32, 64)},
    **{f"U{b}": f"uint{b}" for b in (8, 16, 32, 64)},
    "BOOL": "bool",
}


def _convert_hint(path: str) -> str:
    out = str(Path(path).with_suffix(".safetensors"))
    return (
        f'Convert it once, on a machine with PyTorch: python -c "import torch; '
        f"from safetensors.torch import save_file; sd = torch.load({path!r}, map_location='cpu'); "
        f"sd = sd.get('state_dict', sd); save_file({{k: v.contiguous() for k, v in sd.items()}}, "
        f'{out!r})" and load the .safetensors file instead.'
    )


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    try:
        return load_file(path)
    except TypeError:  # A dtype NumPy does not know (bfloat16, float8): read the raw layout.
        pass
    with open(path, "rb") as f:
        header_size = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(header_size))
    data = np.memmap(path, np.uint8, mode="r", offset=8 + header_size)
    state = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in _DTYPES:
            raise UserError(f"{path}: tensor {name!r} has dtype {info['dtype']}, unsupported")
        dtype = np.dtype(_DTYPES[info["dtype"]])
        start, stop = info["data_offsets"]
        state[name] = np.array(data[start:stop].view(dtype).reshape(info["shape"]))
    return state


def _torch_to_numpy(tensor) -> np.ndarray:
    import torch

    tensor = tensor.detach().cpu()
    if tensor.dtype == torch.bfloat16:  # Bit-exact: reinterpret the 16 bits as ml_dtypes.bfloat16.
        return tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return tensor.numpy()


def _read_torch(path: Path, *, what: str) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise UserError(
            f"{what} is a PyTorch pickle and reading it needs PyTorch, which is not installed "
            f"(jaxseg does not need it otherwise). {_convert_hint(str(path))}"
        ) from None
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise UserError(
            f"{what} holds Python objects besides tensors, which jaxseg does not unpickle "
            "(torch.load(weights_only=True) refused it): save just its state dict with "
            "torch.save(checkpoint['state_dict'], ...), or convert it to safetensors"
        ) from e
    return _unwrap(checkpoint, what)


def _unwrap(checkpoint, what: str) -> dict[str, np.ndarray]:
    """Finds the state dict in a checkpoint (nested under ``state_dict``, ``model``, ...)."""
    while isinstance(checkpoint, Mapping):
        nested = [k for k in WRAPPER_KEYS if isinstance(checkpoint.get(k), Mapping)]
        if not nested:
            break
        checkpoint = checkpoint[nested[0]]
    if not isinstance(checkpoint, Mapping):
        raise UserError(f"{what} holds a {type(checkpoint).__name__}, not a state dict")
    state = {}
    for key, value in checkpoint.items():
        if hasattr(value, "detach"):
            state[str(key)] = _torch_to_numpy(value)
        elif isinstance(value, np.ndarray | np.generic):
            state[str(key)] = np.asarray(value)
    if not state:
        raise UserError(f"{what} holds no tensors (its keys: {sorted(checkpoint)[:8]})")
    return state


def strip_prefixes(state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Removes a ``module.`` (DataParallel) or ``model.`` prefix that every key has, repeatedly."""
    state = dict(state)
    changed = True
    while changed and state:
        changed = False
        for prefix in KEY_PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix) :]: v for k, v in state.items()}
                changed = True
    return state


def load_state_dict(source, *, revision: str | None = None) -> dict[str, np.ndarray]:
    """Reads a PyTorch-style state dict as ``{name: np.ndarray}``, without PyTorch where possible.

    Args:
      source: a ``.safetensors``, ``.npz``, ``.pth``/``.pt``/``.bin`` path; ``hf-hub:ORG/NAME``;
        or a mapping of already loaded arrays/tensors.
      revision: for a hub id, the branch, tag or commit (default: ``main``).

    Raises:
      UserError (a ValueError): a missing file, an unknown suffix, a torch file without PyTorch,
        a hub id without huggingface_hub or not cached while offline.
    """
    if isinstance(source, Mapping):
        return strip_prefixes(_unwrap(source, "the mapping"))
    text = os.fspath(source)
    if text.startswith(HUB_PREFIX):
        repo_id = text[len(HUB_PREFIX) :]
        if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo_id):
            raise UserError(f"{text!r} is not a hub id; write hf-hub:ORG/NAME")
        path = hub_file(repo_id, revision=revision)
        what = f"'{text}' ({path.name})"
    else:
        path, what = Path(text), text
    if not path.is_file():
        raise WeightsNotFound(f"weights file {what} does not exist")
    suffix = path.suffix.lower()
    readers = {".safetensors": _read_safetensors, ".npz": _read_npz}
    readers.update({s: functools.partial(_read_torch, what=what) for s in TORCH_SUFFIXES})
    if suffix not in readers:
        raise UserError(
            f"cannot read weights from {what}: expected .safetensors, .npz, "
            f"{', '.join(TORCH_SUFFIXES)} or hf-hub:ORG/NAME"
        )
    try:
        state = readers[suffix](path)
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - each reader raises its own types on a bad file.
        reason = " ".join(f"{type(e).__name__}: {e}".split())[:300]
        raise UserError(
            f"{what} is not a readable {suffix} file (cut short, or not weights?): {reason}"
        ) from e
    return strip_prefixes(state)


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def _indices(state: Mapping[str, np.ndarray], pattern: str) -> list[int]:
    return sorted({int(m.group(1)) for k in state if (m := re.fullmatch(pattern, k))})


def detect_layout(state: Mapping[str, np.ndarray]) -> str:
    """The layout of a state dict, from its key names.

    Returns:
      ``'torchvision_vgg16'`` (``features.N.*``, ``classifier.{0,3,6}.*``), ``'timm_vgg16'``
      (``features.N.*``, ``pre_logits.fc1/fc2.*``, ``head.fc.*``) or ``'torchvision_resnet'``
      (``conv1``, ``bn1``, ``layerK.B.*``, ``fc``; timm's ResNets use the same names).

    Raises:
      UserError: for any other layout, naming a few of its keys.
    """
    keys = set(state)
    convs = [
        i
        for i in _indices(state, r"features\.(\d+)\.weight")
        if state[f"features.{i}.weight"].ndim == 4
    ]
    if convs:
        if any(k.startswith("features.") and k.endswith("running_mean") for k in keys):
            problem = "a VGG with batch norm (vgg16_bn); FCN's VGG16 has none"
        elif len(convs) != 13:
            problem = f"a VGG with {len(convs)} convolutions; VGG16 has 13"
        elif {"classifier.0.weight", "classifier.3.weight"} <= keys:
            return "torchvision_vgg16"
        elif {"pre_logits.fc1.weight", "pre_logits.fc2.weight"} <= keys:
            return "timm_vgg16"
        else:
            problem = "VGG16 convolutions without fc6/fc7 (classifier.0/3 or pre_logits.fc1/fc2)"
    elif {"conv1.weight", "bn1.running_mean", "layer1.0.conv1.weight"} <= keys:
        return "torchvision_resnet"
    else:
        problem = "an unknown layout"
    sample = sorted(keys)[:6]
    raise UserError(
        f"state dict with {len(keys)} tensors is {problem} (keys: {sample}...); supported: "
        "torchvision/timm VGG16 and torchvision-style ResNet"
    )


def resnet_stages(state: Mapping[str, np.ndarray]) -> tuple[tuple[int, ...], bool]:
    """Blocks per stage of a torchvision-style ResNet and whether its blocks are bottlenecks,
    e.g. ``((2, 2, 2, 2), False)`` for ResNet-18, ``((3, 4, 6, 3), True)`` for ResNet-50."""
    stages = tuple(len(_indices(state, rf"layer{k}\.(\d+)\.conv1\.weight")) for k in (1, 2, 3, 4))
    if not all(stages):
        raise UserError(f"not a four-stage ResNet state dict: blocks per stage {stages}")
    return stages, "layer1.0.conv3.weight" in state
