"""Submit one imgworker resize job from Python. Usage: python resize.py HOST:PORT SRC_URL DST_URL WIDTH"""

import json
import sys

from imgworker import Client, ImgworkerError

server, src, dst, width = sys.argv[1:5]
with Client([server]) as client:
    try:
        result = client.resize(src=src, dst=dst, width=int(width))
    except ImgworkerError as exc:
        print(f"{exc.code}: {exc.message}" + (" (retryable)" if exc.retryable else ""), file=sys.stderr)
        print(json.dumps({"ok": False, "error": exc.to_dict()}))
        sys.exit(2 if exc.code == "UNAVAILABLE" else 1)
print(json.dumps(result.raw))
