"""What each kind of source and model may set: the one table that the schema's messages and the
semantic checks read (tests check that the schema lists exactly these keys)."""

from __future__ import annotations

#: The keys each kind of source and model reads, and so the only ones it may set (the schema lists
#: the union). Sources: calmix.calibration.corpora reads the kind's own keys, the shard rule 'sampling' and 'bos'.
#: Models: the rules read 'dtype' of every kind; 'path' is a folder (local) or a repository (hub, gguf);
#: calmix-plan reads 'architecture' of a model whose config.json is not here yet (the world's shape is world.model).
KEYS_BY_KIND = {
    "source": {
        "world": ("kind", "generator", "docs", "sampling", "bos"),
        "local": ("kind", "path", "format", "max_docs", "template", "chat_field", "sampling", "bos"),
        "hub": ("kind", "path", "name", "split", "data_files", "revision", "streaming", "max_docs", "template",
                "chat_field", "sampling", "bos"),
        "installed": ("kind", "packages", "files", "exclude", "extract", "part", "min_chars", "max_docs", "sampling", "bos"),
    },
    "model": {
        "world": ("kind", "dtype"),
        "local": ("kind", "path", "dtype", "architecture"),
        "hub": ("kind", "path", "revision", "dtype", "architecture"),
        "gguf": ("kind", "file", "package", "path", "revision", "sha256", "dtype", "architecture"),
    },
}

#: Local and hub models whose linear layers calmix can name from config.json (LLaMA's module names).
LLAMA_LIKE = ("llama", "mistral", "qwen2")


def gguf_origin(spec: dict) -> str:
    """Where a GGUF model's file comes from: 'package' (a registry package), 'hub' (a repository) or 'local'."""
    return "package" if "package" in spec else "hub" if "path" in spec else "local"
