#!/bin/bash
# One launcher per node, started by train.sbatch as `srun --ntasks-per-node=1 node.sh OVERRIDES...`.
#
# Builds this node's command with `python -m sft.launch slurm-args` (SLURM_NODEID differs per
# node, so it must run here, inside the step), runs it and exits with its exit code.
#
# SIGTERM: Slurm signals every process of the step itself (the torchrun agent, which also forwards
# it to its workers, and the workers directly). This script only notes it and keeps waiting: if it
# died at once, its task would end and slurmstepd would kill the workers while they save; if it
# forwarded the signal, the agent would get it twice and cut its graceful shutdown short.
set -uo pipefail

: "${SFT_PYTHON:?set SFT_PYTHON (train.sbatch does)}"
ppn_args=()
[[ -n "${SFT_PROCS_PER_NODE:-}" ]] && ppn_args=(--procs-per-node "$SFT_PROCS_PER_NODE")

cmd_text=$("$SFT_PYTHON" -m sft.launch slurm-args "${ppn_args[@]}" \
    --python "$SFT_PYTHON" --script "${SFT_TRAIN_SCRIPT:-sft/train.py}" -- "$@") || exit $?
eval "cmd=($cmd_text)"
echo "[sft node ${SLURM_NODEID}/${SLURM_JOB_NUM_NODES} $(hostname)] ${cmd_text}"

trap 'echo "[sft node ${SLURM_NODEID}] SIGTERM: waiting for the launcher to finish"' TERM
"${cmd[@]}" &
child=$!
rc=0
while :; do
    wait "$child"
    rc=$?
    kill -0 "$child" 2>/dev/null || break  # a trap interrupted `wait`: the launcher still runs
done
exit "$rc"
