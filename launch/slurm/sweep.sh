#!/bin/bash
# Submit a Hydra-style comma sweep as separate SLURM jobs, one train.sbatch per combination.
#
#   launch/slurm/sweep.sh -- collator=padding,packing model=tiny data=demo
#   launch/slurm/sweep.sh --nodes=4 --gpus-per-node=8 -- distributed=zero3 collator=padding,packing
#
# Options before `--` go to every `sbatch`; overrides after it go to every job, a comma list
# (`key=a,b`) expanding to one job per value (several lists: their product). Each job gets its own
# job id, so its own run directory (outputs/<experiment>/<job id>), and requeues on its own.
# Prints one line per job: its id, then its overrides. Set SFT_SBATCH_SCRIPT to submit another
# batch script.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
python=${SFT_PYTHON:-python3}
[[ -z "${SFT_PYTHON:-}" && -x "$root/.venv/bin/python" ]] && python="$root/.venv/bin/python"
script=${SFT_SBATCH_SCRIPT:-$here/train.sbatch}
export SFT_ROOT=${SFT_ROOT:-$root}  # the jobs run this checkout wherever sweep.sh is called from

sbatch_args=()
while [[ $# -gt 0 && "$1" != "--" ]]; do
    sbatch_args+=("$1")
    shift
done
[[ "${1:-}" == "--" ]] && shift
if [[ $# -eq 0 ]]; then
    echo "usage: $0 [SBATCH_OPTIONS...] -- key=v1,v2 [key=value ...]" >&2
    exit 2
fi

plan=$(cd "$root" && "$python" -m sft.launch sweep "$@")
while IFS= read -r line; do
    eval "overrides=($line)"
    job_id=$(sbatch --parsable "${sbatch_args[@]}" "$script" "${overrides[@]}")
    echo "${job_id} ${line}"
done <<< "$plan"
