#!/usr/bin/env bash
# Runs every test of gpuwarden on a fresh Debian machine: installs what the tests need
# (Prometheus and promtool, chromium and Node.js from Debian; the browser test's npm
# packages; the OpenAPI validator from PyPI), then formats check, lints and tests.
#
#   ./scripts/test.sh            # everything
#   ./scripts/test.sh --quick    # skip clippy
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
[[ "${1:-}" == "--quick" ]] && quick=1

# --- system packages -------------------------------------------------------------
need=()
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v curl >/dev/null 2>&1 || need+=(curl)
[[ -x /usr/bin/chromium ]] || need+=(chromium)        # the web UI's browser test
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)   # deploy/systemd unit check
command -v npm >/dev/null 2>&1 || need+=(nodejs npm)
command -v prometheus-alertmanager >/dev/null 2>&1 || need+=(prometheus-alertmanager)   # notify: real Alertmanager
[[ -x /usr/sbin/rsyslogd ]] || need+=(rsyslog)                  # notify: real syslog collector
[[ -e /usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so ]] || need+=(rsyslog-gnutls)   # … with TLS
# The PostgreSQL store's conformance suite and end-to-end test start a throwaway server
# (initdb + pg_ctl on loopback, as user postgres when run as root).
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null 2>&1 || need+=(postgresql)
if ((${#need[@]})); then
    echo "==> installing ${need[*]} (Debian packages)"
    SUDO=""
    [[ $(id -u) -ne 0 ]] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# The OpenAPI 3.1 validator (PyPI) for the API document test.
if ! python3 -c 'import openapi_spec_validator' >/dev/null 2>&1; then
    echo "==> pip install openapi-spec-validator"
    python3 -m pip install --quiet --disable-pip-version-check openapi-spec-validator==0.9.0
fi
# A real SMTP server with STARTTLS (PyPI) for the email notification test.
if ! python3 -c 'import aiosmtpd' >/dev/null 2>&1; then
    echo "==> pip install aiosmtpd"
    python3 -m pip install --quiet --disable-pip-version-check aiosmtpd==1.4.6
fi
# schemathesis (PyPI): the API against its OpenAPI document (crates/gpuwarden/tests/schemathesis.rs).
if ! python3 -c 'import schemathesis' >/dev/null 2>&1; then
    echo "==> pip install schemathesis"
    python3 -m pip install --quiet --disable-pip-version-check schemathesis==4.32.5
fi
# Schemas of the Kubernetes API, bundled (no network at test time), for deploy/kubernetes.
if ! command -v kubernetes-validate >/dev/null 2>&1; then
    echo "==> pip install kubernetes-validate"
    python3 -m pip install --quiet --disable-pip-version-check kubernetes-validate==1.37.0
fi
# playwright-core (drives chromium; it downloads no browser), pinned by the lock file.
echo "==> npm ci (tests/browser)"
npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error >/dev/null
# Tests that use these tools fail (instead of skipping) when this is set.
export GPUWARDEN_REQUIRE_TOOLS=1

# --- Rust ----------------------------------------------------------------------------
# A from-scratch run gains nothing from incremental caches, and they cost gigabytes of
# disk on a CI machine (see [profile.dev] in Cargo.toml).
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
echo "==> cargo fmt --check"
cargo fmt --all -- --check
if ((quick == 0)); then
    echo "==> cargo clippy"
    cargo clippy --workspace --all-targets --locked -- -D warnings
fi
mkdir -p target
echo "==> cargo test"
cargo test --workspace --locked 2>&1 | tee target/test-output.txt
# One closing line with the totals, for humans and CI.
awk '/^test result:/ {p+=$4; f+=$6; i+=$8} END {printf "%d passed, %d failed, %d skipped\n", p, f, i}' target/test-output.txt
