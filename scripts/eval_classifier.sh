#!/usr/bin/env bash
# eval_classifier: trains the shipped routing classifier and reports its quality on rows it was
# not trained on, with ../shared/tools/route_eval.py next to route_eval's baselines.
#
#   1. `switchyard train` on mmlu + gsm8k + arena, holding out 20% of the rows (by a hash of
#      seed 1 and the row id), writes routes/classifier-v1.json, and scores the held-out rows
#      through the written file;
#   2. route_eval.py on each set's held-out rows: the classifier, `length` and `random`;
#   3. the same on out-of-fold scores of a 5-fold cross-validation over the training rows;
#   4. with --splits N: N more held-out splits (seeds 2..N+1, weights thrown away), to show how
#      much the small sets' numbers move with the split.
#
# usage: scripts/eval_classifier.sh [--splits N] [--out FILE] [--bin PATH]
# env:   SY_ROUTING_DATA (default ../shared/data/routing), SY_ROUTE_EVAL (route_eval.py)
# Build the binary first: cmake -S . -B build-cls-rel -DCMAKE_BUILD_TYPE=Release &&
#                         cmake --build build-cls-rel --target switchyard
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
data_dir=${SY_ROUTING_DATA:-$root/../shared/data/routing}
route_eval=${SY_ROUTE_EVAL:-$root/../shared/tools/route_eval.py}
bin=$root/build-cls-rel/switchyard
out=$root/routes/classifier-v1.json
splits=0
while [ $# -gt 0 ]; do
    case $1 in
    --splits) splits=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --bin) bin=$2; shift 2 ;;
    *) echo "usage: $0 [--splits N] [--out FILE] [--bin PATH]" >&2; exit 2 ;;
    esac
done
[ -x "$bin" ] || { echo "eval_classifier: no binary at $bin (see the header)" >&2; exit 1; }
[ -f "$route_eval" ] || { echo "eval_classifier: no route_eval.py at $route_eval" >&2; exit 1; }

sets="mmlu gsm8k arena"
data=""
for s in $sets; do data="$data${data:+,}$data_dir/train-$s.jsonl"; done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The recipe: every flag is the trainer's default, spelled out so the command documents it.
recipe=(--seed 1 --holdout 0.2 --label gain --l2 1e-4 --l2-hashed 5e-3 --l2-mc 3e-3 --set-weight gsm8k=4
        --hash-bits 18 --epochs 300 --prune 1e-3 --threshold-share 0.5)

echo "== training: $bin train --data <mmlu,gsm8k,arena> --out $out ${recipe[*]} --folds 5"
"$bin" train --data "$data" --out "$out" "${recipe[@]}" --eval-dir "$work/main" --folds 5

for seed in $(seq 2 $((splits + 1))); do
    "$bin" train --data "$data" --out "$work/split-$seed.json" "${recipe[@]}" \
        --seed "$seed" --eval-dir "$work/split-$seed" --quiet > /dev/null
done

python3 - "$route_eval" "$work" "$splits" $sets <<'PY'
import json, statistics, subprocess, sys

route_eval, work, splits, sets = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]

def run(*args):
    out = subprocess.run([sys.executable, route_eval, *args], check=True,
                         capture_output=True, text=True).stdout
    return {r["router"]: r for r in map(json.loads, out.splitlines())}

def evaluate(prefix, s):
    data = f"{prefix}-{s}.jsonl"
    res = run(data, f"{prefix}-{s}.scores.jsonl", "--label", "classifier-v1")
    res.update(run(data, "--baselines"))
    return res

def table(title, prefix):
    print(f"\n{title}\n")
    print("| set | rows | router | APGR | CPT(50%) | CPT(80%) |")
    print("|---|---:|---|---:|---:|---:|")
    for s in sets:
        res = evaluate(prefix, s)
        for i, name in enumerate(["classifier-v1", "length", "random"]):
            r = res[name]
            head = f"| {s} | {r['n']} " if i == 0 else "| | "
            print(f"{head}| {name} | {r['apgr']:.4f} | {r['cpt50']:.4f} | {r['cpt80']:.4f} |")

table("Held-out rows (20%, seed 1), scored from routes/classifier-v1.json:", f"{work}/main/holdout")
table("5-fold cross-validation on the training rows (out-of-fold scores):", f"{work}/main/cv")

if splits:
    print(f"\nAPGR over {splits} other held-out splits (seeds 2..{splits + 1}), mean (sd):\n")
    print("| set | classifier-v1 | length | splits won |")
    print("|---|---:|---:|---:|")
    for s in sets:
        mine, length = [], []
        for seed in range(2, splits + 2):
            res = evaluate(f"{work}/split-{seed}/holdout", s)
            mine.append(res["classifier-v1"]["apgr"])
            length.append(res["length"]["apgr"])
        won = sum(a > b for a, b in zip(mine, length))
        sd = lambda v: statistics.stdev(v) if len(v) > 1 else 0.0
        print(f"| {s} | {statistics.mean(mine):.4f} ({sd(mine):.3f}) | "
              f"{statistics.mean(length):.4f} ({sd(length):.3f}) | {won}/{splits} |")
PY
