#!/usr/bin/env bash
# Two searches on one machine, the second started 0, 2 and 4 s after the first, both with the default dashboard
# (issue 35: a port probed free before Ray bound it was lost to the other search, which died). Prints each pair's
# exit statuses and the dashboard ports they named. Rerun from the project's root:
#   bash benchmarks/two_searches.sh [TREE] > benchmarks/results/two_searches.txt   (TREE: a checkout; default .)
set -u
tree=$(cd "${1:-.}" && pwd)
data=$(cd "${SEARCH_DATA_DIR:-../shared/data}" && pwd)
out=$(mktemp -d)
search=(python -m search.run --model cnn --gpus 0 --cpus 1 --smoke --num-samples 1 --max-epochs 1 --set channels=16
        --data-dir "$data" --verbose 0)
for offset in 0 2 4; do
  (cd "$tree" && PYTHONPATH="$tree" RAY_USAGE_STATS_ENABLED=0 "${search[@]}" --storage-path "$out/a$offset" \
     > "$out/a$offset.log" 2>&1) &
  first=$!
  sleep "$offset"
  (cd "$tree" && PYTHONPATH="$tree" RAY_USAGE_STATS_ENABLED=0 "${search[@]}" --storage-path "$out/b$offset" \
     > "$out/b$offset.log" 2>&1)
  second=$?
  wait $first
  echo "second started ${offset} s after the first: exit statuses $? and $second; dashboard ports:" \
       $(grep -ho 'Ray dashboard: http://[0-9.]*:[0-9]*' "$out/a$offset.log" "$out/b$offset.log" | sed 's/.*://')
done
rm -rf "$out"
