"""The benchmarks `sft-eval` knows: user-facing name -> lm_eval task, headline metric, few-shot.

Invariant: every name in `BENCHMARKS` maps to exactly one offline lm_eval task (or group) whose
YAML template ships in `sft/eval/tasks/`, and to the stock lm_eval task used with `--hub`. The
headline metric (`metric`, `filter`) names a key that lm_eval writes into its results as
"<metric>,<filter>". Sub-tasks (`mmlu_<subject>`, `bbh_<task>`) resolve to one member of the
group, so a quick run can pick a couple of subjects.
"""

from __future__ import annotations

from dataclasses import dataclass

from sft.errors import UserError


@dataclass(frozen=True)
class Benchmark:
    """One benchmark as `sft-eval` runs it.

    name: what the user types (`gsm8k`, `mmlu`, `mmlu_anatomy`, ...).
    task: the lm_eval task or group name of the offline config (`sft_gsm8k`, `sft_mmlu`).
    hub_task: the stock lm_eval task used with `--hub` (needs internet).
    metric, filter: the headline score, read from lm_eval's results as "metric,filter".
    num_fewshot: the shot count the paper uses (written into the shipped YAML).
    unsafe: True when scoring executes model-written code (needs --allow-code-execution).
    """

    name: str
    task: str
    hub_task: str
    metric: str
    filter: str
    num_fewshot: int
    unsafe: bool = False

    @property
    def metric_key(self) -> str:
        return f"{self.metric},{self.filter}"


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark("gsm8k", "sft_gsm8k", "gsm8k", "exact_match", "flexible-extract", 4),
        Benchmark("mmlu", "sft_mmlu", "mmlu", "acc", "none", 5),
        Benchmark("bbh", "sft_bbh", "bbh_cot_fewshot", "exact_match", "get-answer", 3),
        Benchmark("ifeval", "sft_ifeval", "ifeval", "prompt_level_strict_acc", "none", 0),
        Benchmark("humaneval", "sft_humaneval", "humaneval_instruct", "pass@1", "none", 0, True),
        Benchmark("math", "sft_math", "minerva_math", "exact_match", "none", 4),
        Benchmark("math500", "sft_math500", "minerva_math500", "exact_match", "none", 4),
    )
}

# Groups whose members can be requested one by one as "<group>_<member>".
GROUPS = ("mmlu", "bbh")


def resolve_benchmark(name: str, members: dict[str, list[str]]) -> Benchmark:
    """Map a user task name to its `Benchmark`; `members` lists the sub-tasks of each group.

    `members` comes from the data on disk (`{"mmlu": ["anatomy", ...], "bbh": [...]}`), so a
    sub-task name is accepted exactly when its data file exists.
    """
    name = name.strip()
    if name in BENCHMARKS:
        return BENCHMARKS[name]
    for group in GROUPS:
        prefix = f"{group}_"
        if name.startswith(prefix) and name[len(prefix) :] in members.get(group, []):
            parent = BENCHMARKS[group]
            return Benchmark(
                name=name,
                task=f"{parent.task}_{name[len(prefix) :]}",
                hub_task=f"{parent.hub_task}_{name[len(prefix) :]}",
                metric=parent.metric,
                filter=parent.filter,
                num_fewshot=parent.num_fewshot,
                unsafe=parent.unsafe,
            )
    known = ", ".join(BENCHMARKS)
    raise UserError(
        f"unknown eval task {name!r}; choose from {known} or mmlu_<subject> / bbh_<task>"
    )
