"""Verifies recorded deliveries with the official Standard Webhooks library.

Reads a JSON list of {"secret", "headers", "body", "expect"} and exits non-zero when the
library's verdict differs from "expect" for any of them.
"""

import json
import sys

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def main() -> int:
    with open(sys.argv[1], encoding="utf-8") as f:
        cases = json.load(f)
    failures = 0
    for i, case in enumerate(cases):
        try:
            Webhook(case["secret"]).verify(case["body"], case["headers"])
            ok = True
        except WebhookVerificationError:
            ok = False
        if ok != case["expect"]:
            failures += 1
            print(f"case {i} ({case['headers']['webhook-id']}): verified={ok}, expected {case['expect']}")
    print(f"{len(cases)} deliveries checked with standardwebhooks, {failures} disagreements")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
