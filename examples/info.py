"""Ask imgworker for an image's facts from Python. Usage: python info.py HOST:PORT SRC_URL [FACT...]"""

import json
import sys

from imgworker import Client, ImgworkerError

server, src, *facts = sys.argv[1:]
with Client([server]) as client:
    try:
        result = client.info(src=src, analyze=facts or ["meta"])
    except ImgworkerError as exc:
        print(f"{exc.code}: {exc.message}", file=sys.stderr)
        print(json.dumps({"ok": False, "error": exc.to_dict()}))
        sys.exit(2 if exc.code == "UNAVAILABLE" else 1)
print(json.dumps(result.raw))
