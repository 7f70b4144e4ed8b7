"""Check every manifest under results/ against its file (calmix-verify): the report on the terminal
and in the log; the job fails when anything is damaged."""

import sys

from calmix.core.io import write_text
from calmix.core.verify import summary, verify_tree

checked, problems = verify_tree(snakemake.params.results)
report = "".join(f"{line}\n" for line in [*(p.line() for p in problems), summary(checked, problems)])
write_text(snakemake.log[0], report)
sys.stdout.write(report)
sys.exit(1 if problems else 0)
