"""Download a hub model (weights, config, tokenizer) into the Hugging Face cache; record where and which commit."""

from calmix.hub import download_model
from calmix.io import write_json
from calmix.logs import setup_logging

setup_logging(snakemake.log[0])
spec = snakemake.params.spec
folder, sha = download_model(spec["path"], spec["revision"])
write_json(snakemake.output[0], {
    "repo": spec["path"],
    "revision": spec["revision"],
    "resolved_revision": sha,
    "path": str(folder),
    "bytes": sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()),
})
