#!/usr/bin/env bash
# The whole test suite: installs what it needs (scripts/setup.sh), then
# lints, docs, Autobahn conformance, and every cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

echo "== what the tests need (Debian packages, installed when missing)"
bash scripts/setup.sh

echo "== rustfmt, clippy, rustdoc"
cargo fmt --all -- --check
cargo clippy --quiet --all-targets --all-features -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --quiet --no-deps --all-features

echo "== the blocking API alone: no tokio, no hyper in the tree"
cargo clippy --quiet --lib --no-default-features --features blocking,rustls -- -D warnings
cargo clippy --quiet --lib --no-default-features --features blocking -- -D warnings
cargo clippy --quiet --lib --no-default-features -- -D warnings
cargo clippy --quiet --lib --no-default-features --features tokio -- -D warnings
cargo clippy --quiet --lib --no-default-features --features tokio,native-tls -- -D warnings
cargo clippy --quiet --lib --no-default-features --features tokio,tls,aws-lc-rs -- -D warnings
if cargo tree --no-default-features --features blocking,rustls -e normal --prefix none | grep -E '^(tokio|hyper)'; then
  echo "the blocking-only build pulls in the crates above" >&2
  exit 1
fi

echo "== benchmarks build"
cargo bench --quiet --no-run

echo "== Autobahn TestSuite, server and client modes"
scripts/conformance.sh

echo "== interop peers: Python websockets, Node ws"
bash scripts/interop-deps.sh

echo "== fuzz targets, 10 s each (fuzz/README.md has longer runs)"
bash scripts/fuzz.sh 10

echo "== cargo test"
cargo test --all-features
