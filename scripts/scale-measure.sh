#!/usr/bin/env bash
# Scale measurement for issue 18 ("cost grows no faster than the work"): teacher encoding time and
# the peak memory and speed of a training run, on Multi30k's 29k training pairs and on a corpus of
# >= 200k distinct English sentences made by joining two Multi30k pairs into one
# (`X1 X2` / `en1 en2`, a fixed seed).
#
#   scripts/scale-measure.sh OTKD_BINARY LABEL [SIZES]
#
# OTKD_BINARY  a release build of otkd (`cargo build --release -p otkd-host`; copy it aside to
#              compare two commits).
# LABEL        names this binary's results, e.g. before / after.
# SIZES        which corpora: "29k 200k" (default), or one of them.
#
# Environment: OTKD_DATA (the real Multi30k, default ../shared/data/multi30k), OTKD_TEACHER,
# SCALE_WORK (default /tmp/otkd-scale: the joined corpus, caches, runs and logs; the 200k cache
# entry is ~5 GB and is deleted after its runs), SCALE_PAIRS (default 200000), SCALE_STEPS (1000),
# SCALE_KEEP_CACHE=1 (keep each size's cache in $SCALE_WORK/cache-SIZE for every label and later
# calls, to compare builds without encoding 200k sentences, ~27 CPU-minutes, per build: the
# encode columns are then those of a hit when the entry exists; entries are the same bytes
# whichever build wrote them, which each row's entry.sha256 lets you check).
#
# For each size: `otkd teacher encode` into an empty cache (a miss: tokenise, encode, write),
# the same again (a hit: open and checksum the entries), then
# `otkd train --method ot --lang ay --preset micro --steps 1000 --eval-every 500` from the cache.
# Each command runs under /usr/bin/time -v (wall, user and system CPU seconds, peak RSS). During
# training /proc/PID/status is sampled every 0.5 s for the peak of RssAnon (heap) and RssFile
# (mapped file pages, which the kernel can drop; ru_maxrss counts both). Seconds per 1000 steps
# are metrics.jsonl's elapsed_seconds (training only, evaluation excluded) scaled to 1000.
# Results: $SCALE_WORK/results-LABEL.tsv, one row per size.
set -euo pipefail

bin=$(realpath "$1")
label=$2
sizes=${3:-"29k 200k"}
root=$(cd "$(dirname "$0")/.." && pwd)
data29=$(realpath "${OTKD_DATA:-$root/../shared/data/multi30k}")
work=${SCALE_WORK:-/tmp/otkd-scale}
pairs=${SCALE_PAIRS:-200000}
steps=${SCALE_STEPS:-1000}
mkdir -p "$work"

# The joined corpus: val/test files, image splits and features copied as they are; train.en.gz /
# train.ay.gz hold `pairs` distinct joined pairs of the real train split.
data200=$work/data-${pairs}
if [ ! -f "$data200/task1/train.en.gz" ]; then
    mkdir -p "$data200/task1"
    cp -r "$data29/image_splits" "$data29/features" "$data200/"
    cp "$data29"/task1/val.* "$data29"/task1/test_2016_flickr.* "$data200/task1/"
    python3 - "$data29/task1" "$data200/task1" "$pairs" <<'EOF'
import gzip, random, sys
src, dst, want = sys.argv[1], sys.argv[2], int(sys.argv[3])
read = lambda lang: gzip.open(f"{src}/train.{lang}.gz", "rt", encoding="utf-8").read().split("\n")[:29000]
en, ay = read("en"), read("ay")
rng = random.Random(18)
seen, out_en, out_ay = set(), [], []
while len(out_en) < want:
    i, j = rng.randrange(len(en)), rng.randrange(len(en))
    if i == j or not ay[i].strip() or not ay[j].strip():
        continue
    joined = f"{en[i].strip()} {en[j].strip()}"
    if joined in seen:
        continue
    seen.add(joined)
    out_en.append(joined)
    out_ay.append(f"{ay[i].strip()} {ay[j].strip()}")
for lang, lines in (("en", out_en), ("ay", out_ay)):
    with gzip.open(f"{dst}/train.{lang}.gz", "wt", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
print(f"{len(out_en)} distinct joined pairs", file=sys.stderr)
EOF
fi

# `timed NAME CMD...`: runs CMD under /usr/bin/time -v, logs to $logs/NAME.{out,time}, samples
# RssAnon/RssFile of the process into $logs/NAME.rss.
timed() {
    local name=$1
    shift
    /usr/bin/time -v -o "$logs/$name.time" "$@" >"$logs/$name.out" 2>&1 &
    local tpid=$! pid=""
    : >"$logs/$name.rss"
    while kill -0 "$tpid" 2>/dev/null; do
        [ -z "$pid" ] && pid=$(pgrep -P "$tpid" || true)
        if [ -n "$pid" ] && [ -r "/proc/$pid/status" ]; then
            awk '/^(RssAnon|RssFile|VmRSS):/ {printf "%s=%s ", $1, $2} END {print ""}' "/proc/$pid/status" \
                >>"$logs/$name.rss" 2>/dev/null || true
        fi
        sleep 0.5
    done
    wait "$tpid"
}
field() { grep -F "$2" "$logs/$1.time" | sed 's/.*: //'; }
peak() { grep -o "$2:=[0-9]*" "$logs/$1.rss" | cut -d= -f2 | sort -n | tail -1; }

out=$work/results-$label.tsv
[ -f "$out" ] || printf 'label\tsize\tsentences\tencode_wall_s\tencode_cpu_s\tsentences_per_s\tencode_peak_rss_mb\thit_wall_s\thit_peak_rss_mb\tentry_bytes\ttrain_wall_s\ttrain_cpu_s\ttrain_peak_rss_mb\ttrain_peak_anon_mb\ttrain_peak_file_mb\ts_per_1000_steps\tteacher_reported_sps\n' >"$out"
for size in $sizes; do
    case $size in
        29k) data=$data29 ;;
        200k) data=$data200 ;;
        *) echo "unknown size $size" >&2; exit 2 ;;
    esac
    logs=$work/logs-$label-$size
    cache=$work/cache-$label-$size
    [ "${SCALE_KEEP_CACHE:-0}" = 1 ] && cache=$work/cache-$size
    run=$work/run-$label-$size
    rm -rf "$logs" "$run"
    [ "${SCALE_KEEP_CACHE:-0}" = 1 ] || rm -rf "$cache"
    mkdir -p "$logs"
    sentences=$(zcat "$data/task1/train.en.gz" | wc -l)
    echo "== $label $size: $sentences training sentences; $(lscpu | grep 'Model name' | sed 's/ \+/ /g'); load $(cut -d' ' -f1-3 /proc/loadavg)"
    timed encode "$bin" --data "$data" --cache "$cache" teacher encode --splits train --json
    # val and test too, untimed, so the training run below only reads the cache.
    "$bin" --data "$data" --cache "$cache" teacher encode --splits val,test_2016_flickr >"$logs/encode-eval.out" 2>&1
    timed hit "$bin" --data "$data" --cache "$cache" teacher encode --splits train --json
    timed train "$bin" --data "$data" --cache "$cache" train --method ot --lang ay --preset micro \
        --steps "$steps" --eval-every $((steps / 2)) --out "$run"
    entry=$(ls "$cache"/teacher-train.en-*.safetensors)
    entry_bytes=$(stat -L -c %s "$entry")
    sha256sum "$entry" | sed "s|$cache/||" >"$logs/entry.sha256"
    train_s=$(python3 -c "import json,sys; r=[json.loads(l) for l in open('$run/metrics.jsonl') if l.strip()]; print('%.1f' % (r[-1]['elapsed_seconds'] * 1000 / r[-1]['step']))")
    cpu() { echo "$(field "$1" 'User time') + $(field "$1" 'System time')" | bc; }
    wall() { field "$1" 'Elapsed (wall clock)' | awk -F: '{ s = 0; for (i = 1; i <= NF; i++) s = s * 60 + $i; print s }'; }
    mb() { echo "$(field "$1" 'Maximum resident set size') / 1024" | bc; }
    enc_wall=$(wall encode)
    reported=$(grep -o '"sentences_per_second": *[0-9.]*' "$logs/encode.out" | head -1 | sed 's/.*: *//' || true)
    printf '%s\t%s\t%s\t%s\t%s\t%.0f\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$size" "$sentences" \
        "$enc_wall" "$(cpu encode)" "$(echo "$sentences / $enc_wall" | bc -l)" "$(mb encode)" \
        "$(wall hit)" "$(mb hit)" "$entry_bytes" "$(wall train)" "$(cpu train)" "$(mb train)" \
        "$(($(peak train RssAnon) / 1024))" "$(($(peak train RssFile) / 1024))" "$train_s" "${reported:-?}" | tee -a "$out"
    # The 200k entry is ~5 GB: keep only its hash (entries of the same data must match across builds).
    [ "${SCALE_KEEP_CACHE:-0}" = 1 ] || rm -rf "$cache"
done
