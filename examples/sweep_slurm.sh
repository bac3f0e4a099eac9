#!/bin/sh
# A codi sweep on a Slurm cluster: a job array runs the shards (--shard K/N, task K), a merge job
# waits for all of them (afterok) and writes the report of their union to $OUT/all. With CONFIRM
# set (a fraction, e.g. 0.5), four stages: the shards explore, a merge selects the top cells on all
# the exploration questions ($OUT/select/selection.json), the shards confirm them on the held-out
# questions (--selection), and the last merge reports (leading with the confirmed cells).
#
#   sh examples/sweep_slurm.sh                                   # codi-nano, 8 shards, the default grid
#   MODEL=path/to/codi QUESTIONS=data/templates.jsonl SHARDS=32 CONFIRM=0.5 sh examples/sweep_slurm.sh
#
# Run it from the repository root after `make` (build/codi); every job runs there too. Settings
# (environment): MODEL, QUESTIONS, SHARDS (8), THREADS per task (4), OUT (sweep_slurm), CONFIRM,
# SWEEP_OPTS (more codi sweep options, the same for every stage, e.g. "--exact --max-answer 12").
set -e
MODEL=${MODEL:-models/codi-nano/codi_nano.bin}
QUESTIONS=${QUESTIONS:-models/codi-nano/test.jsonl}
SHARDS=${SHARDS:-8}
THREADS=${THREADS:-4}
OUT=${OUT:-sweep_slurm}
SWEEP_OPTS=${SWEEP_OPTS:---exact --max-answer 12}
CODI="$(pwd)/build/codi"
[ -x "$CODI" ] || { echo "sweep_slurm.sh: no $CODI: run make first" >&2; exit 1; }
mkdir -p "$OUT"
sweep="$CODI sweep --model $MODEL --questions $QUESTIONS $SWEEP_OPTS --threads $THREADS"
[ -n "$CONFIRM" ] && sweep="$sweep --confirm $CONFIRM"
shards() {   # $1: a name for the logs, $2: extra options, $3: the job it waits for; prints the array job's id
  sbatch --parsable --chdir="$(pwd)" --array=1-"$SHARDS" --cpus-per-task="$THREADS" --job-name=codi-sweep \
    --output="$OUT/$1_%a.log" ${3:+--dependency=afterok:$3} \
    --wrap "$sweep $2 --shard \$SLURM_ARRAY_TASK_ID/$SHARDS --out $OUT/part\$SLURM_ARRAY_TASK_ID"
}
merge() {    # $1: output folder, $2: the job it waits for; prints its id
  parts=""
  k=1
  while [ "$k" -le "$SHARDS" ]; do parts="$parts $OUT/part$k"; k=$((k + 1)); done
  sbatch --parsable --chdir="$(pwd)" --job-name=codi-sweep-merge --output="$OUT/$(basename "$1").log" \
    --dependency=afterok:"$2" --wrap "$CODI sweep --merge$parts --out $1"
}
explore=$(shards explore "")
if [ -z "$CONFIRM" ]; then
  last=$(merge "$OUT/all" "$explore")
else
  select=$(merge "$OUT/select" "$explore")
  confirm=$(shards confirm "--selection $OUT/select/selection.json" "$select")
  last=$(merge "$OUT/all" "$confirm")
fi
echo "submitted: shards $explore ... report job $last; the report: $OUT/all.log, $OUT/all/summary.jsonl"
