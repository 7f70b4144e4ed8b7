"""Sample one seeded calibration shard from a source's token ids."""

from calmix.io import read_json
from calmix.logs import setup_logging
from calmix.shards import build_shard, manifest_path, read_tokens

setup_logging(snakemake.log[0])
tokens = read_json(manifest_path(snakemake.input[0]))
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
