# Shared by tools/bench-ca.sh and tools/bench-open-loop.sh (sourced, not
# run): the release build, a work directory and server cleanup, waiting for
# readiness, and the counters both read. Set `admin_port` before sourcing
# (default 15014, the zero-config admin port).
#
#   bench_setup                 needs 2 CPUs; builds `sigil` (release); sets
#                               $sigil, $work, $pid; stops the server and
#                               removes $work on exit
#   wait_ready                  waits for /readyz of the server $pid (10 s),
#                               or prints its log and exits 1
#   cpu_ns                      CPU time of the server's threads, ns
#   issued_ok                   certificates issued so far (from /metrics)
#   field KEY N                 column N of the line starting with KEY

admin_port="${admin_port:-15014}"

bench_setup() {
  if [ "$(nproc)" -lt 2 ]; then
    echo "needs at least 2 CPUs (server and load tool pinned apart)" >&2
    exit 1
  fi
  cargo build --release -q -p sigil-cli
  sigil="$PWD/target/release/sigil"
  work="$(mktemp -d)"
  pid=""
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM
}

bench_cleanup() {
  if [ -n "$pid" ]; then kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}

wait_ready() {
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    curl -sf "http://127.0.0.1:$admin_port/readyz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "the server did not become ready; log:" >&2
  cat "$work/serve.log" >&2
  exit 1
}

cpu_ns() { cat /proc/"$pid"/task/*/schedstat | awk '{s += $1} END {printf "%.0f", s}'; }
issued_ok() {
  curl -sf "http://127.0.0.1:$admin_port/metrics" |
    awk '/^sigil_ca_certificates_issued_total\{outcome="ok"\}/ {printf "%.0f", $2}'
}
field() { awk -v k="$1" -v n="$2" '$1 == k {print $n}'; }
