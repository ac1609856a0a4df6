#!/usr/bin/env bash
# The whole test suite: lints, docs, Autobahn conformance, then every cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

echo "== rustfmt, clippy, rustdoc"
cargo fmt --all -- --check
cargo clippy --quiet --all-targets --all-features -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --quiet --no-deps --all-features

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
