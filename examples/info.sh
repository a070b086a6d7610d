#!/usr/bin/env bash
# Ask imgworker for an image's facts with the C `gearman` CLI (gearman-tools): nothing is written.
# Usage: info.sh HOST PORT SRC_URL [FACT...]   (facts: meta thumbhash blurhash dominant phash; default meta)
# Exit 0: done; 1: the job failed (CODE: message on stderr, the JSON on stdout); 2: no job server answered.
set -euo pipefail
host=$1 port=$2 src=$3
shift 3
facts=$(printf '"%s",' "${@:-meta}")
result=$(gearman -h "$host" -p "$port" -f info "{\"src\":\"$src\",\"analyze\":[${facts%,}]}" 2>/dev/null || true)
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
