#!/usr/bin/env bash
# Measures the CA server against in-process issuance, interleaved, on this
# machine. Loopback only; stops by itself.
#
#   tools/bench-ca.sh [rounds] [seconds per round] [concurrency]
#
# Part 1, per core (the issue's ratio): the zero-config `sigil ca serve`
# pinned to CPU 0 (so one worker), `sigil bench ca` pinned to CPU 1. Each
# round runs `sigil bench issue` (in-process issuance, one thread, the same
# CA and CSR shape, on CPU 0 while the server idles), then the load tool
# against the server (reading the server's CPU time from
# /proc/<pid>/task/*/schedstat), then
# `sigil bench issue` again; the server is compared with the mean of the
# two in-process runs around it, which cancels this VM's drift as far as it
# is linear over a round. The medians are the figures to quote.
#
# Part 2, same core at the same moment (the drift-free ratio): the server
# on CPU 0 under the load tool on CPU 1, and `sigil bench issue` on CPU 0 at
# the same time. The two share CPU 0 slice by slice, so whatever speed the
# VM has at that moment, both have it; each is counted per second of CPU it
# actually used (server: certificates from its /metrics over its threads'
# CPU time from /proc; in-process: its own `cpu-rate`). Latency is not
# quoted from this part: the server has half a core.
#
# Part 3, whole machine: the server (one worker per CPU) and the load tool
# unpinned, sharing every core, for the same time as all rounds together.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-9}"
secs="${2:-3}"
conc="${3:-64}"
ncpu="$(nproc)"
. tools/bench-lib.sh
bench_setup

start_server() { # $1: taskset CPU list
  (cd "$work" && exec taskset -c "$1" "$sigil" ca serve >>"$work/serve.log" 2>&1) &
  pid=$!
  wait_ready
}
stop_server() { kill -TERM "$pid"; wait "$pid" 2>/dev/null || true; pid=""; }
load() { # $1: CPU list, $2: seconds; prints the load tool's report
  taskset -c "$1" "$sigil" bench ca --duration "${2}s" --concurrency "$conc" \
    --ca-root "$work/sigil-data/ca/root-cert.pem" 2>/dev/null
}
median() { sort -g | awk '{a[NR] = $1} END {m = (NR + 1) / 2; print (NR % 2) ? a[m] : (a[m - 0.5] + a[m + 0.5]) / 2}'; }

echo "== machine: $ncpu CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "== part 1: server on CPU 0, load tool on CPU 1, concurrency $conc, $rounds rounds of ${secs}s"
start_server 0
load 1 2 >/dev/null # warm-up: connections, caches, CPU frequency
printf '%5s %12s %12s %7s %14s %7s %8s %8s\n' round in-process server cores per-core ratio p50-ms p99-ms
: >"$work/rounds"
inproc_rate() {
  taskset -c 0 "$sigil" bench issue --dir "$work/sigil-data/ca" --duration "${secs}s" | field throughput: 2
}
for r in $(seq 1 "$rounds"); do
  before="$(inproc_rate)"
  t0="$(cpu_ns)"; w0="$(date +%s.%N)"
  out="$(load 1 "$secs")"
  t1="$(cpu_ns)"; w1="$(date +%s.%N)"
  after="$(inproc_rate)"
  # The mean of the in-process runs either side: cancels drift that is
  # linear over the round.
  inproc="$(echo "($before + $after) / 2" | bc -l)"
  rate="$(echo "$out" | field throughput: 2)"
  p50="$(echo "$out" | field latency: 3)"
  p99="$(echo "$out" | field latency: 6)"
  cores="$(echo "($t1 - $t0) / 1000000000 / ($w1 - $w0)" | bc -l)"
  per_core="$(echo "$rate / $cores" | bc -l)"
  ratio="$(echo "100 * $per_core / $inproc" | bc -l)"
  printf '%5d %12.0f %12.0f %7.2f %14.0f %6.1f%% %8.2f %8.2f\n' \
    "$r" "$inproc" "$rate" "$cores" "$per_core" "$ratio" "$p50" "$p99"
  echo "$inproc $rate $per_core $ratio $p50 $p99" >>"$work/rounds"
done
stop_server
printf 'median: in-process %.0f certs/s; server %.0f certs/s = %.0f per server core; ratio %.1f%%; p50 %.2f ms; p99 %.2f ms\n' \
  "$(awk '{print $1}' "$work/rounds" | median)" \
  "$(awk '{print $2}' "$work/rounds" | median)" \
  "$(awk '{print $3}' "$work/rounds" | median)" \
  "$(awk '{print $4}' "$work/rounds" | median)" \
  "$(awk '{print $5}' "$work/rounds" | median)" \
  "$(awk '{print $6}' "$work/rounds" | median)"

echo "== part 2: server and in-process issuance both on CPU 0 at the same time, load tool on CPU 1, $rounds rounds of ${secs}s"
start_server 0
load 1 2 >/dev/null
printf '%5s %16s %16s %7s\n' round in-process/cpu-s server/cpu-s ratio
: >"$work/same"
for r in $(seq 1 "$rounds"); do
  n0="$(issued_ok)"; c0="$(cpu_ns)"
  load 1 "$secs" >"$work/load.out" &
  lpid=$!
  inproc="$(taskset -c 0 "$sigil" bench issue --dir "$work/sigil-data/ca" --duration "${secs}s" | field cpu-rate: 2)"
  wait "$lpid"
  n1="$(issued_ok)"; c1="$(cpu_ns)"
  server="$(echo "($n1 - $n0) / (($c1 - $c0) / 1000000000)" | bc -l)"
  ratio="$(echo "100 * $server / $inproc" | bc -l)"
  printf '%5d %16.0f %16.0f %6.1f%%\n' "$r" "$inproc" "$server" "$ratio"
  echo "$inproc $server $ratio" >>"$work/same"
done
stop_server
printf 'median: in-process %.0f certs per CPU-second; server %.0f certs per CPU-second; ratio %.1f%%\n' \
  "$(awk '{print $1}' "$work/same" | median)" \
  "$(awk '{print $2}' "$work/same" | median)" \
  "$(awk '{print $3}' "$work/same" | median)"

all="0-$((ncpu - 1))"
total=$((rounds * secs))
echo "== part 3: server and load tool sharing CPUs $all, concurrency $conc, ${total}s"
start_server "$all"
load "$all" 2 >/dev/null
t0="$(cpu_ns)"; w0="$(date +%s.%N)"
load "$all" "$total"
t1="$(cpu_ns)"; w1="$(date +%s.%N)"
printf 'server CPU used: %.2f cores\n' "$(echo "($t1 - $t0) / 1000000000 / ($w1 - $w0)" | bc -l)"
stop_server
