"""Dequantize a GGUF model file into a verified safetensors checkpoint with its tokenizer and chat template."""

import logging

from calmix.core.io import atomic_path, read_json, sha256_file
from calmix.core.logs import setup_logging
from calmix.models.gguf import convert_gguf
from calmix.models.loading import write_checkpoint_manifest

setup_logging(snakemake.log[0], snakemake.threads)
gguf = snakemake.input.gguf
if snakemake.input.get("fetched"):
    source = read_json(snakemake.input.fetched)
else:  # a local file: its sha256, checked against the pin when the config gives one
    source = {"file": snakemake.params.spec["file"], "sha256": sha256_file(gguf)}
    pinned = snakemake.params.spec.get("sha256")
    if pinned and pinned != source["sha256"]:
        raise SystemExit(f"calmix error: {gguf} has sha256 {source['sha256']}, not the {pinned} that "
                         f"models.{snakemake.wildcards.model}.sha256 pins; point 'file' at the right file or fix the pin")
    if not pinned:
        logging.warning("%s is unpinned: a changed or damaged file would convert without a word. Its sha256 now is %s "
                        "(recorded in conversion.json); pin it: models.%s.sha256: %s", gguf, source["sha256"],
                        snakemake.wildcards.model, source["sha256"])
    source["pinned"] = bool(pinned)
with atomic_path(snakemake.output[0]) as tmp:
    summary = convert_gguf(gguf, tmp)
    manifest = write_checkpoint_manifest(tmp, "conversion.json", source=source, **summary)
logging.info("done: %s", manifest)
