#!/usr/bin/env bash
# Memory per idle connection of `sigil ca serve` (BENCHMARKS.md, "Idle
# connections"): starts a release server on loopback with a throwaway
# self-signed CA, opens N idle TLS + HTTP/2 connections (tools/idle-conns.py)
# and prints the server's RSS growth per connection.
#
# usage: tools/idle-conns.sh [N [STAGE]]   (default 3000 h2; STAGE: see idle-conns.py)
#   SIGIL=path/to/sigil   use this binary instead of building target/release/sigil
#   LEGACY=1              for a binary older than the idle/preface/keep-alive
#                         settings (they are left out of the config)
set -euo pipefail

N=${1:-3000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [[ -z "${SIGIL:-}" ]]; then
    cargo build --release -p sigil-cli --manifest-path "$ROOT/Cargo.toml" >&2
    SIGIL=$ROOT/target/release/sigil
fi
ulimit -n $((N + 1024))

WORK=$(mktemp -d)
trap 'kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; rm -rf "$WORK"' EXIT
GRPC=127.0.0.1:${GRPC_PORT:-25012}
ADMIN=127.0.0.1:${ADMIN_PORT:-25014}
cat > "$WORK/ca.toml" <<TOML
[authority]
dir = "$WORK/ca"

[server]
grpc_addr = "$GRPC"
admin_addr = "$ADMIN"
max_connections = $((N + 100))
$([[ -n "${LEGACY:-}" ]] || printf 'idle_timeout = "1h"\npreface_timeout = "1h"\nkeepalive_interval = "1h"\n')

[[authenticators]]
type = "svid"
TOML
"$SIGIL" ca serve --config "$WORK/ca.toml" > "$WORK/log" 2>&1 &
PID=$!
for _ in $(seq 200); do
    if python3 -c "import urllib.request,sys; urllib.request.urlopen('http://$ADMIN/readyz')" 2>/dev/null; then
        break
    fi
    kill -0 "$PID" 2>/dev/null || { cat "$WORK/log" >&2; exit 1; }
    sleep 0.05
done
echo "binary: $SIGIL ($(nproc) CPUs, workers = one per CPU)"
python3 "$ROOT/tools/idle-conns.py" "$PID" "$GRPC" "$ADMIN" "$N" "${2:-h2}"
