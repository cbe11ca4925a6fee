#!/bin/bash
# One launcher per node, started by train.sbatch as `srun --ntasks-per-node=1 node.sh OVERRIDES...`.
#
# Builds this node's command with `python -m sft.launch slurm-args` (SLURM_NODEID differs per
# node, so it must run here, inside the step) and runs it. Exit code 75 means "pre-empted,
# checkpoint saved, requeue me": the trainer's own code when it runs directly (one process), and
# this script's translation when a SIGTERM reached the step and the launcher then failed (the
# torchrun agent inside `accelerate launch` reports any worker exit as 1).
#
# SIGTERM plan: Slurm signals every process of the step itself (the torchrun agent, which also
# forwards it to its workers, and the workers directly), so this script only records the signal
# and keeps waiting; forwarding it again would hit the agent twice and cut its graceful shutdown.
set -uo pipefail

: "${SFT_PYTHON:?set SFT_PYTHON (train.sbatch does)}"
ppn_args=()
[[ -n "${SFT_PROCS_PER_NODE:-}" ]] && ppn_args=(--procs-per-node "$SFT_PROCS_PER_NODE")

cmd_text=$("$SFT_PYTHON" -m sft.launch slurm-args "${ppn_args[@]}" \
    --python "$SFT_PYTHON" --script "${SFT_TRAIN_SCRIPT:-sft/train.py}" -- "$@") || exit $?
eval "cmd=($cmd_text)"
echo "[sft node ${SLURM_NODEID}/${SLURM_JOB_NUM_NODES} $(hostname)] ${cmd_text}"

preempted=0
trap 'preempted=1; echo "[sft node ${SLURM_NODEID}] SIGTERM: waiting for the checkpoint"' TERM
"${cmd[@]}" &
child=$!
rc=0
while :; do
    wait "$child"
    rc=$?
    kill -0 "$child" 2>/dev/null || break  # a trap interrupted `wait`: the launcher still runs
done

if [[ $preempted -eq 1 && $rc -ne 0 ]]; then
    echo "[sft node ${SLURM_NODEID}] launcher exited $rc after SIGTERM: reporting 75 (requeue)"
    rc=75
fi
exit "$rc"
