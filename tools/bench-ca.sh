#!/usr/bin/env bash
# Measures the CA server against the in-process issuance engine, in one run,
# on this machine: the server pinned to CPU 0, the load tool to CPU 1, the
# server's CPU time read from /proc. Loopback only; stops by itself.
#
#   tools/bench-ca.sh [seconds] [concurrency]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-10}"
conc="${2:-64}"
cargo build --release -q -p sigil-cli
sigil=target/release/sigil
work="$(mktemp -d)"
trap 'kill -TERM "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT

echo "== in-process issuance (criterion, ECDSA P-256 CSR)"
cargo bench -q -p sigil-ca --bench issuance -- --noplot 2>&1 \
  | grep -E "^interleaved csr_ecdsa_p256|^issue/csr_ecdsa_p256|time:" | grep -v "%\]" | head -4

echo "== server (CPU 0) under sigil bench ca (CPU 1), concurrency $conc, ${secs}s"
(cd "$work" && SIGIL_LOG=warn exec taskset -c 0 "$OLDPWD/$sigil" ca serve >serve.log 2>&1) &
pid=$!
for _ in $(seq 1 100); do
  curl -sf http://127.0.0.1:15014/readyz >/dev/null 2>&1 && break
  sleep 0.1
done
server_pid="$(pgrep -f "$sigil ca serve" | head -n 1)"
cpu() { awk '{print $14 + $15}' "/proc/$server_pid/stat"; }
t0="$(cpu)"; w0="$(date +%s.%N)"
taskset -c 1 "$sigil" bench ca --duration "${secs}s" --concurrency "$conc" \
  --ca-root "$work/sigil-data/ca/root-cert.pem" 2>/dev/null | tee "$work/bench.txt"
t1="$(cpu)"; w1="$(date +%s.%N)"
cores="$(echo "($t1 - $t0) / 100 / ($w1 - $w0)" | bc -l)"
rate="$(awk '/^throughput:/ {print $2}' "$work/bench.txt")"
printf 'server CPU used: %.2f cores; rate per server core: %.0f certs/s\n' "$cores" "$(echo "$rate / $cores" | bc -l)"
