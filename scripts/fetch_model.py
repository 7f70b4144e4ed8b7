"""Download a hub model (weights, config, tokenizer) into the Hugging Face cache; record where and which commit."""

from calmix.fetch.hub import download_model
from calmix.core.io import write_json
from calmix.core.logs import setup_logging
from calmix.core.records import FetchManifest

setup_logging(snakemake.log[0])
spec = snakemake.params.spec
folder, sha = download_model(spec["path"], spec["revision"])
manifest: FetchManifest = {
    "repo": spec["path"],
    "revision": spec["revision"],
    "resolved_revision": sha,
    "path": str(folder),
    "bytes": sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()),
}
write_json(snakemake.output[0], manifest)
