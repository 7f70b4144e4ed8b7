"""GGUF files as models: dequantized once by transformers into a save_pretrained folder (float32
safetensors, the tokenizer and its chat template), which every later job loads like any other.

transformers reads GGUF itself (with the ``gguf`` package) and dequantizes every tensor to float;
the model it returns carries a GGUF quantizer that refuses ``save_pretrained``, so the weights are
moved into a plain model of the same config first. Dequantized values are exact in float32.
"""

from __future__ import annotations

import logging
from importlib.metadata import version
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class GgufFileError(ValueError):
    """A GGUF file that is cut short or damaged; the message names the file."""


def check_gguf_file(path: str | Path) -> None:
    """Read the file's header and tensor table and check every tensor lies inside the file, before any
    conversion: the gguf package fails on a damaged file with reshape or struct errors that name nothing."""
    from gguf import GGUFReader

    path = Path(path)
    size = path.stat().st_size
    try:
        reader = GGUFReader(str(path))
    except Exception as err:  # noqa: BLE001 (the gguf package raises struct, value, index and numpy errors alike)
        raise GgufFileError(
            f"{path} ({size:,} bytes) is not a readable GGUF file: its header or tensor table is cut short or damaged "
            f"({type(err).__name__}: {err}); delete it and fetch it again, or point the model's 'file' at an intact copy"
        ) from None
    if not reader.tensors:
        raise GgufFileError(f"{path} holds no tensors: not a model file")
    last = max(reader.tensors, key=lambda t: t.data_offset + t.n_bytes)
    if (end := last.data_offset + last.n_bytes) > size:
        raise GgufFileError(f"{path} is truncated: tensor {last.name!r} ends at byte {end:,} and the file has {size:,}; "
                            "delete it and fetch it again")


def check_finite(tensors: dict[str, Any], path: str | Path) -> None:
    """Every dequantized value is finite: a damaged scale of a quantized block dequantizes to inf or nan."""
    import torch

    for key, tensor in tensors.items():
        if not torch.isfinite(tensor).all():
            raise GgufFileError(f"{path}: tensor {key!r} dequantizes to non-finite values (the file is damaged); "
                                "delete it and fetch it again")


def gguf_metadata(path: str | Path) -> dict[str, Any]:
    """What the file says of itself: architecture, name, tensor count and quantization types."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))

    def field(key: str) -> Any:
        f = reader.fields.get(key)
        if f is None:
            return None
        value = f.parts[f.data[0]]
        return bytes(value).decode("utf-8") if value.dtype.kind == "u" and value.dtype.itemsize == 1 else value.item()

    types = sorted({t.tensor_type.name for t in reader.tensors})
    return {"architecture": field("general.architecture"), "name": field("general.name"),
            "tensors": len(reader.tensors), "tensor_types": types}


def convert_gguf(path: str | Path, out: str | Path) -> dict[str, Any]:
    """Dequantize the GGUF file ``path`` into the save_pretrained folder ``out`` (model, tokenizer,
    chat template); returns what the conversion manifest records besides the weights' sha256."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path, out = Path(path), Path(out)
    check_gguf_file(path)
    folder, name = str(path.parent), path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = loaded.config
    config.__dict__.pop("quantization_config", None)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    weights = loaded.state_dict()
    check_finite(weights, path)
    model.load_state_dict(weights, assign=True)
    model.tie_weights()
    model.eval().save_pretrained(out)
    tokenizer.save_pretrained(out)
    parameters = sum(p.numel() for p in model.parameters())
    log.info("converted %s: %s, %d layers, %.1fM parameters", name, config.model_type, config.num_hidden_layers, parameters / 1e6)
    return {
        "gguf": gguf_metadata(path),
        "model_type": config.model_type,
        "num_layers": config.num_hidden_layers,
        "parameters": parameters,
        "vocab_size": len(tokenizer),
        "chat_template": tokenizer.chat_template is not None,
        "converted_by": {"transformers": version("transformers"), "gguf": version("gguf")},
    }
