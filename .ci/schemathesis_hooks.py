"""Schemathesis hooks for Tally's CI run: steer the money routes' generated requests to accounts
that hold credits, each under a fresh idempotency key, so that the fuzzed requests reach the
ledger's writes (debits, grants, holds and their captures) instead of stopping at an empty
account or replaying one key. Every other field stays generated, so the server's checks of
amounts, descriptions and metadata are still fuzzed."""

import itertools

import schemathesis

# Seeded by .ci/schemathesis before the run, with credits enough for every debit.
USERS = ["ci-alice", "ci-bob", "ci-carol", "ci-dave"]
MONEY = {
    "/internal/credits/consume",
    "/internal/credits/grant",
    "/internal/credits/holds",
    "/admin/credits/manual",
}
HOLD_ACTIONS = {
    "/internal/credits/holds/{id}/capture",
    "/internal/credits/holds/{id}/release",
    "/internal/credits/holds/{id}",
}
_sequence = itertools.count()


def _path(ctx):
    operation = getattr(ctx, "operation", None)
    return getattr(operation, "path", None)


@schemathesis.hook
def map_body(ctx, body):
    if _path(ctx) not in MONEY or not isinstance(body, dict):
        return body
    n = next(_sequence)
    body["user_id"] = USERS[n % len(USERS)]
    body["idempotency_key"] = f"ci-{n}"
    if _path(ctx) == "/internal/credits/holds" and n % 2 == 0:
        # Every other reserve names credits, not usage (which needs features nobody priced).
        body.pop("quantities", None)
        body.pop("dimensions", None)
        if not isinstance(body.get("amount"), int) or body["amount"] < 1:
            body["amount"] = 1 + n % 100
    return body


@schemathesis.hook
def map_path_parameters(ctx, parameters):
    # Holds are numbered from 1: point the hold actions at ones that exist.
    if _path(ctx) in HOLD_ACTIONS and isinstance(parameters, dict) and "id" in parameters:
        parameters["id"] = str(next(_sequence) % 60 + 1)
    return parameters
