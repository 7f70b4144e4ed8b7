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
    folder, name = str(path.parent), path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = loaded.config
    config.__dict__.pop("quantization_config", None)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), assign=True)
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
