#!/usr/bin/env bash
# Submit one imgworker resize job with the C `gearman` CLI (gearman-tools).
# Usage: resize.sh HOST PORT SRC_URL DST_URL WIDTH
# The CLI exits 0 whenever the job completed; the JSON's "ok" says whether the resize succeeded.
set -euo pipefail
host=$1 port=$2 src=$3 dst=$4 width=$5
result=$(gearman -h "$host" -p "$port" -f resize "{\"src\":\"$src\",\"dst\":\"$dst\",\"width\":$width}")
echo "$result"
case "$result" in
  *'"ok":true'*) exit 0 ;;
  *) exit 1 ;;
esac
