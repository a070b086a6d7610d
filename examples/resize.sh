#!/usr/bin/env bash
# Submit one imgworker resize job with the C `gearman` CLI (gearman-tools).
# Usage: resize.sh HOST PORT SRC_URL DST_URL WIDTH
# Exit 0: done; 1: the job failed (CODE: message on stderr, the JSON on stdout); 2: no job server answered.
set -euo pipefail
host=$1 port=$2 src=$3 dst=$4 width=$5
result=$(gearman -h "$host" -p "$port" -f resize "{\"src\":\"$src\",\"dst\":\"$dst\",\"width\":$width}" 2>/dev/null || true)
# The gearman 1.1 CLI exits 0 even when it could not connect: no JSON at all means no job server answered.
if [ -z "$result" ]; then
  echo "no job server answered at $host:$port" >&2
  exit 2
fi
echo "$result"
case "$result" in
  *'"ok":true'*) exit 0 ;;
esac
code=$(printf '%s' "$result" | sed -n 's/.*"code":"\([A-Z_]*\)".*/\1/p')
message=$(printf '%s' "$result" | sed -n 's/.*"message":"\([^"]*\)".*/\1/p')
echo "${code:-INTERNAL}: $message" >&2
exit 1
