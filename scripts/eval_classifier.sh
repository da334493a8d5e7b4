#!/usr/bin/env bash
# eval_classifier: trains the shipped routing classifier and reports its quality on rows it was
# not trained on, with ../shared/tools/route_eval.py next to route_eval's baselines.
#
#   1. `switchyard train` on every row of mmlu + gsm8k + arena writes routes/classifier-v1.json
#      (the shipped model: the most data for prompts it has never seen);
#   2. the primary held-out estimate, a cross-fit over ALL rows: 5 folds by a hash of (fold
#      key, row id), each row scored by the model fitted on the other 4 folds (so every row is
#      held out exactly once, and never by a model trained on it), repeated with --crossfit K
#      fold keys (1..K); route_eval.py per set and key, and a paired bootstrap (1000 resamples
#      of all rows) of APGR(classifier) - APGR(length), averaged over the fold keys;
#   3. for continuity, the seed-1 split: a model trained on 80% of the rows (by a hash of seed 1
#      and the row id; not shipped) scored on the other 20%, with a bootstrap of that split,
#      and a 5-fold cross-validation over its 80% training rows;
#   4. with --splits N: N more held-out splits (seeds 2..N+1, weights thrown away);
#   5. with --cv-repeats R: the cross-validation of step 3 repeated with R fold keys (only the
#      seed-1 training rows), the protocol every modelling choice is made with.
#
# usage: scripts/eval_classifier.sh [--crossfit K] [--splits N] [--cv-repeats R] [--jobs J]
#                                   [--out FILE] [--bin PATH]
# env:   SY_ROUTING_DATA (default ../shared/data/routing), SY_ROUTE_EVAL (route_eval.py)
# Build the binary first: cmake -S . -B build-cls-rel -DCMAKE_BUILD_TYPE=Release &&
#                         cmake --build build-cls-rel --target switchyard
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
data_dir=${SY_ROUTING_DATA:-$root/../shared/data/routing}
route_eval=${SY_ROUTE_EVAL:-$root/../shared/tools/route_eval.py}
bin=$root/build-cls-rel/switchyard
out=$root/routes/classifier-v1.json
crossfit=5
splits=0
repeats=1
jobs=2
usage="usage: $0 [--crossfit K] [--splits N] [--cv-repeats R] [--jobs J] [--out FILE] [--bin PATH]"
while [ $# -gt 0 ]; do
    case $1 in
    --crossfit) crossfit=$2; shift 2 ;;
    --splits) splits=$2; shift 2 ;;
    --cv-repeats) repeats=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --bin) bin=$2; shift 2 ;;
    *) echo "$usage" >&2; exit 2 ;;
    esac
done
[ -x "$bin" ] || { echo "eval_classifier: no binary at $bin (see the header)" >&2; exit 1; }
[ -f "$route_eval" ] || { echo "eval_classifier: no route_eval.py at $route_eval" >&2; exit 1; }
[ "$crossfit" -ge 1 ] || { echo "$usage" >&2; exit 2; }

sets="mmlu gsm8k arena"
data=""
for s in $sets; do data="$data${data:+,}$data_dir/train-$s.jsonl"; done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The recipe: every flag is the trainer's default or the chosen value, spelled out so the
# command documents it. Only --holdout, --seed and --fold-seed differ between the runs below.
recipe=(--label gain --pairwise 0.5 --pairs-max 300000 --l2 1e-4 --l2-hashed 5e-3 --l2-mc 3e-3
        --set-weight gsm8k=4 --hash-bits 18 --epochs 300 --prune 1e-3 --threshold-share 0.5)

# Runs `switchyard train` quietly in the background, at most $jobs at a time. Every run is
# deterministic and writes only its own files, so the order does not matter.
pids=()
bg_train() {
    while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n; done
    "$bin" train --data "$data" "${recipe[@]}" --quiet "$@" > /dev/null &
    pids+=($!)
}

echo "== shipped model: $bin train --data <mmlu,gsm8k,arena> --out $out ${recipe[*]}" \
     "--seed 1 --holdout 0 --folds 5 --fold-seed 1"
"$bin" train --data "$data" --out "$out" "${recipe[@]}" --seed 1 --holdout 0 --folds 5 \
    --fold-seed 1 --eval-dir "$work/all-1"

for k in $(seq 2 "$crossfit"); do
    bg_train --out "$work/all-$k.json" --seed 1 --holdout 0 --folds 5 --fold-seed "$k" \
        --eval-dir "$work/all-$k"
done
bg_train --out "$work/main.json" --seed 1 --holdout 0.2 --folds 5 --eval-dir "$work/main"
for seed in $(seq 2 $((splits + 1))); do
    bg_train --out "$work/split-$seed.json" --seed "$seed" --holdout 0.2 \
        --eval-dir "$work/split-$seed"
done
for fs in $(seq 2 "$repeats"); do
    bg_train --out "$work/cv-$fs.json" --seed 1 --holdout 0.2 --folds 5 --fold-seed "$fs" \
        --eval-dir "$work/cv-$fs"
done
for p in "${pids[@]}"; do wait "$p"; done # a failed run fails the script (set -e)

python3 - "$route_eval" "$work" "$crossfit" "$splits" "$repeats" $sets <<'PY'
import bisect, importlib.util, itertools, json, random, statistics, subprocess, sys

route_eval, work = sys.argv[1], sys.argv[2]
crossfit, splits, repeats = map(int, sys.argv[3:6])
sets = sys.argv[6:]
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

def sd(v):
    return statistics.stdev(v) if len(v) > 1 else 0.0

class Ranking:
    """route_eval's APGR for one scoring of <rows>, recomputed fast for bootstrap weights
    (row i counted c[i] times; a repeated row ties with itself, as route_eval splits ties)."""
    def __init__(self, rows, scores):
        self.order = sorted(range(len(rows)), key=lambda i: -scores[i])
        # last position of each run of equal scores
        self.ends = [p for p in range(len(rows))
                     if p + 1 == len(rows) or scores[self.order[p + 1]] != scores[self.order[p]]]
        self.gain = [r["strong"] - r["weak"] for r in rows]

    def apgr(self, c, weak, strong):
        n, base = sum(c), sum(ci * w for ci, w in zip(c, weak))
        gap = (sum(ci * s for ci, s in zip(c, strong)) - base) / n
        if gap == 0:
            return None
        cw = list(itertools.accumulate(c[i] for i in self.order))
        cg = list(itertools.accumulate(c[i] * self.gain[i] for i in self.order))
        gw = [cw[e] for e in self.ends]
        gg = [cg[e] for e in self.ends]
        ys = []
        for p in range(101):
            k = n * p / 100
            j = bisect.bisect_left(gw, k)  # the run where the k-th call falls
            if j >= len(gw):
                acc = gg[-1]
            else:
                w0, g0 = (gw[j - 1], gg[j - 1]) if j > 0 else (0, 0.0)
                acc = g0 + ((gg[j] - g0) * (k - w0) / (gw[j] - w0) if gw[j] > w0 else 0)
            ys.append((base + acc) / n)
        auc = sum((ys[p] + ys[p + 1]) / 2 for p in range(100)) / 100
        return (auc - base / n) / gap

def bootstrap(rows, scorings):
    """Paired bootstrap of mean_k APGR(scorings[k]) - APGR(length): 1000 resamples of rows."""
    weak = [r["weak"] for r in rows]
    strong = [r["strong"] for r in rows]
    mine = [Ranking(rows, sc) for sc in scorings]
    length = Ranking(rows, [float(len(r["turns"][0])) for r in rows])
    def diff(c):
        a = [m.apgr(c, weak, strong) for m in mine]
        b = length.apgr(c, weak, strong)
        return None if b is None else statistics.mean(a) - b
    point = diff([1] * len(rows))
    rng, diffs = random.Random(1), []
    for _ in range(1000):
        c = [0] * len(rows)
        for _ in rows:
            c[rng.randrange(len(rows))] += 1
        d = diff(c)
        if d is not None:  # no gap to recover: APGR undefined
            diffs.append(d)
    diffs.sort()
    n = len(diffs)
    return point, diffs[int(0.05 * n)], diffs[int(0.95 * n)], sum(d > 0 for d in diffs) / n

def load_scores(prefix, s):
    return [r["score"] for r in re_.load(f"{prefix}-{s}.scores.jsonl")]

def boot_table(prefixes):
    print("| set | difference | 90% interval | resamples where classifier > length |")
    print("|---|---:|---:|---:|")
    for s in sets:
        rows = re_.load(f"{prefixes[0]}-{s}.jsonl")
        point, lo, hi, won = bootstrap(rows, [load_scores(p, s) for p in prefixes])
        print(f"| {s} | {point:+.4f} | [{lo:+.3f}, {hi:+.3f}] | {won:.0%} |")

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

# -- 1. the primary estimate: cross-fit over all rows, every fold key ---------------------
prefixes = [f"{work}/all-{k}/cv" for k in range(1, crossfit + 1)]
print(f"\nCross-fit over all rows (5 folds, fold keys 1..{crossfit}; every row scored once per key "
      "by a model not trained on it), mean (sd) over the keys:\n")
print("| set | rows | router | APGR | CPT(50%) | CPT(80%) | keys where APGR > length |")
print("|---|---:|---|---:|---:|---:|---:|")
for s in sets:
    res = [evaluate(p, s) for p in prefixes]
    mine = {m: [r["classifier-v1"][m] for r in res] for m in ("apgr", "cpt50", "cpt80")}
    base = res[0]
    won = sum(a > base["length"]["apgr"] for a in mine["apgr"])
    cells = " | ".join(f"{statistics.mean(mine[m]):.4f} ({sd(mine[m]):.3f})"
                       for m in ("apgr", "cpt50", "cpt80"))
    print(f"| {s} | {base['classifier-v1']['n']} | classifier-v1 | {cells} | {won}/{crossfit} |")
    for name in ("length", "random"):
        r = base[name]
        print(f"| | | {name} | {r['apgr']:.4f} | {r['cpt50']:.4f} | {r['cpt80']:.4f} | |")

print(f"\nPaired bootstrap of the cross-fit (1000 resamples of all rows): "
      f"APGR(classifier, mean over the {crossfit} keys) - APGR(length)\n")
boot_table(prefixes)

# -- 2. the seed-1 split, for continuity -----------------------------------------------------
table("Held-out rows (20%, seed 1), scored by the model trained on the other 80%:",
      f"{work}/main/holdout")
print("\nBootstrap of the seed-1 held-out rows (1000 resamples): APGR(classifier) - APGR(length)\n")
boot_table([f"{work}/main/holdout"])
table("5-fold cross-validation on the seed-1 training rows (out-of-fold scores):",
      f"{work}/main/cv")

if repeats > 1:
    print(f"\n5-fold cross-validation repeated with {repeats} fold keys (seed-1 training rows "
          "only), APGR mean (sd):\n")
    print("| set | classifier-v1 | length |")
    print("|---|---:|---:|")
    for s in sets:
        ps = [f"{work}/main/cv"] + [f"{work}/cv-{fs}/cv" for fs in range(2, repeats + 1)]
        res = [evaluate(p, s) for p in ps]
        mine = [r["classifier-v1"]["apgr"] for r in res]
        print(f"| {s} | {statistics.mean(mine):.4f} ({sd(mine):.3f}) | "
              f"{res[0]['length']['apgr']:.4f} |")

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
        print(f"| {s} | {statistics.mean(mine):.4f} ({sd(mine):.3f}) | "
              f"{statistics.mean(length):.4f} ({sd(length):.3f}) | {won}/{splits} |")
PY
