#!/usr/bin/env bash
# Ask imgworker for an image's facts with the C `gearman` CLI (gearman-tools): nothing is written.
# Usage: info.sh HOST PORT SRC_URL [FACT...]   (facts: meta thumbhash blurhash dominant phash; default meta)
# The CLI exits 0 whenever the job completed; the JSON's "ok" says whether it succeeded.
set -euo pipefail
host=$1 port=$2 src=$3
shift 3
facts=$(printf '"%s",' "${@:-meta}")
result=$(gearman -h "$host" -p "$port" -f info "{\"src\":\"$src\",\"analyze\":[${facts%,}]}")
echo "$result"
case "$result" in
  *'"ok":true'*) exit 0 ;;
  *) exit 1 ;;
esac
