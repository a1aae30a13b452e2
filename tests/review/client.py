"""A scripted mesh client for the review tests: ``python -m tests.review.client CALLS_JSON``.

CALLS_JSON is a list of ``[method, url, body-or-null]``; every call goes through the sidecar
(``HTTP_PROXY`` set by ``meshward run``) and the status codes are printed as a JSON list.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request


def main() -> None:
    statuses = []
    for method, url, body in json.loads(sys.argv[1]):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            request.add_header("content-type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=20) as resp:
                resp.read()
                statuses.append(resp.status)
        except urllib.error.HTTPError as exc:
            exc.read()
            statuses.append(exc.code)
    print(json.dumps(statuses))


if __name__ == "__main__":
    main()
