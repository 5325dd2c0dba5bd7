# Developer shortcuts; each wraps a command the README documents.

# Serve on 127.0.0.1:8080 from ./tally.db
run:
    cargo run --release

# The whole test suite (PostgreSQL tests run when TALLY_TEST_POSTGRES_URL is set)
test:
    cargo test --workspace

# Tests against the local PostgreSQL too
test-pg:
    TALLY_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test cargo test --workspace

# Formatting and lints, as CI runs them
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# What CI runs
ci:
    bash .ci/run

# Mint a development token: just token alice [admin]
token user role="user":
    cargo run --release -- token --user {{user}} --role {{role}}

# Check every ledger invariant on the configured database
verify:
    cargo run --release -- verify

# Regenerate the committed OpenAPI document
openapi:
    cargo run -- openapi > docs/openapi.json
