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
#      much the small sets' numbers move with the split;
#   5. with --cv-repeats R: the cross-validation of step 3 repeated with R fold keys (still only
#      the seed-1 training rows), the protocol every modelling choice is made with;
#   6. a bootstrap (1000 resamples of the held-out rows) of APGR(classifier) - APGR(length), to
#      show how far one held-out split can be trusted.
#
# usage: scripts/eval_classifier.sh [--splits N] [--cv-repeats R] [--out FILE] [--bin PATH]
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
repeats=1
while [ $# -gt 0 ]; do
    case $1 in
    --splits) splits=$2; shift 2 ;;
    --cv-repeats) repeats=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --bin) bin=$2; shift 2 ;;
    *) echo "usage: $0 [--splits N] [--cv-repeats R] [--out FILE] [--bin PATH]" >&2; exit 2 ;;
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

for fs in $(seq 2 "$repeats"); do
    "$bin" train --data "$data" --out "$work/cv-$fs.json" "${recipe[@]}" --folds 5 \
        --fold-seed "$fs" --eval-dir "$work/cv-$fs" --quiet > /dev/null
done

python3 - "$route_eval" "$work" "$splits" "$repeats" $sets <<'PY'
import importlib.util, json, random, statistics, subprocess, sys

route_eval, work, splits, repeats, sets = (sys.argv[1], sys.argv[2], int(sys.argv[3]),
                                           int(sys.argv[4]), sys.argv[5:])
spec = importlib.util.spec_from_file_location("route_eval", route_eval)
re_ = importlib.util.module_from_spec(spec)
spec.loader.exec_module(re_)

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

if repeats > 1:
    print(f"\n5-fold cross-validation repeated with {repeats} fold keys (training rows only), "
          "APGR mean (sd):\n")
    print("| set | classifier-v1 | length |")
    print("|---|---:|---:|")
    for s in sets:
        prefixes = [f"{work}/main/cv"] + [f"{work}/cv-{fs}/cv" for fs in range(2, repeats + 1)]
        res = [evaluate(p, s) for p in prefixes]
        mine = [r["classifier-v1"]["apgr"] for r in res]
        print(f"| {s} | {statistics.mean(mine):.4f} ({statistics.stdev(mine):.3f}) | "
              f"{res[0]['length']['apgr']:.4f} |")

print("\nBootstrap of the seed-1 held-out rows (1000 resamples): APGR(classifier) - APGR(length)\n")
print("| set | difference | 90% interval | resamples where classifier > length |")
print("|---|---:|---:|---:|")
for s in sets:
    rows = re_.load(f"{work}/main/holdout-{s}.jsonl")
    mine = [r["score"] for r in re_.load(f"{work}/main/holdout-{s}.scores.jsonl")]
    length = [float(len(r["turns"][0])) for r in rows]
    apgr = lambda rs, sc: re_.summary(rs, re_.curve(rs, sc))["apgr"]
    rng, diffs = random.Random(1), []
    for _ in range(1000):
        idx = [rng.randrange(len(rows)) for _ in rows]
        rs = [rows[i] for i in idx]
        if sum(r["strong"] for r in rs) == sum(r["weak"] for r in rs):
            continue  # no gap to recover: APGR undefined
        diffs.append(apgr(rs, [mine[i] for i in idx]) - apgr(rs, [length[i] for i in idx]))
    diffs.sort()
    n = len(diffs)
    print(f"| {s} | {apgr(rows, mine) - apgr(rows, length):+.4f} | "
          f"[{diffs[int(0.05 * n)]:+.3f}, {diffs[int(0.95 * n)]:+.3f}] | "
          f"{sum(d > 0 for d in diffs) / n:.0%} |")

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
