"""Sample one seeded calibration shard from a source's token ids."""

from typing import cast

from calmix.core.logs import setup_logging
from calmix.core.records import TokenManifest
from calmix.calibration.shards import build_shard, read_manifest, read_tokens

setup_logging(snakemake.log[0])
tokens = cast(TokenManifest, read_manifest(snakemake.input[0]))  # an integrity error, naming the rebuild, when it is missing
doc_ids, record_ids = read_tokens(snakemake.input[0])
build_shard(
    doc_ids,
    record_ids,
    nsamples=snakemake.params.nsamples,
    seqlen=snakemake.params.seqlen,
    seed=int(snakemake.wildcards.seed),
    source=snakemake.wildcards.calib,
    spec=snakemake.params.spec,
    **snakemake.params.sampling,
    bos_id=tokens["bos_id"],
    eos_id=tokens["eos_id"],
    tokens_sha256=tokens["sha256"],
    tokenizer_sha256=tokens["tokenizer_sha256"],
    path=snakemake.output.shard,
)
