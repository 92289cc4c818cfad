#!/usr/bin/env bash
# The node agent's benchmarks (issue 15), on this machine. Loopback and unix
# sockets only; every part is bounded and the script stops by itself
# (about 5 minutes with the defaults, most of it part 2), stopping what it started on exit.
#
#   tools/bench-agent.sh [cold-start runs] [JWT rounds] [seconds per JWT run]
#
# Needs root (part 2 runs one client process per uid) and 2 CPUs. Builds
# `sigil` (release) and starts `sigil ca serve` (self-signed P-256 CA in a
# temp dir, development authenticator, node agent
# spiffe://cluster.local/ns/sigil/sa/agent with unbounded impersonation) on
# ports of its own (SIGIL_BENCH_PORT, default 18112; admin +2; the node
# agents' admin +4). Then:
#
# 1. SDS rotation latency: `sigil bench agent sds` (in-process: the agent's
#    SDS server and unix-socket listener on a 2-thread runtime, a fake
#    credential source with certificates made ahead, 1,000 streams over 20
#    connections from a single-threaded client runtime; baseline: the same
#    rotations with one stream). SDS_STREAMS / SDS_ROUNDS to change.
# 2. Memory: a real `sigil agent` in node mode with IDENTITIES (default
#    10,000) registration entries `unix:uid:<100000+i>` -> ns/bench/sa/w<i>;
#    `sigil bench agent fetch-as` runs one child per uid that fetches its
#    X.509-SVID once and exits, so the agent issues and caches one identity
#    per uid (idle_drop 1h keeps them). VmRSS / VmHWM of the agent from
#    /proc/<pid>/status and its anonymous memory from smaps_rollup: idle,
#    after one identity (CA connection up), after all; each read 6 s after
#    the last activity (see `settle`).
# 3. Cold start: `sigil bench agent cold-start` spawns `sigil agent`
#    (sidecar mode, the CA running) per run and times exec to the Workload
#    API socket accepting and to the first X.509-SVID received; baseline:
#    `sigil --version` spawned and reaped in the same run.
# 4. FetchJWTSVID per agent CPU-second: a node-mode agent (one entry,
#    unix:uid:0, so every call is attested through /proc) pinned to CPU 1,
#    `sigil bench agent jwt` on CPU 0 (16 calls in flight over 4
#    connections, the answer cached after the first call). Each round runs
#    the baseline (`--trivial`: the same calls without the
#    workload.spiffe.io header, refused with InvalidArgument before
#    attestation: the socket's gRPC floor) and then the JWT run, counting
#    answers per second of the agent's CPU (/proc/<pid>/task/*/schedstat).
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-20}"
rounds="${2:-5}"
secs="${3:-4}"
identities="${IDENTITIES:-10000}"
sds_streams="${SDS_STREAMS:-1000}"
sds_rounds="${SDS_ROUNDS:-30}"
sds_runs="${SDS_RUNS:-3}"
grpc_port="${SIGIL_BENCH_PORT:-18112}"
admin_port=$((grpc_port + 2))
agent_admin=$((grpc_port + 4))
uid_base=100000
if [ "$(id -u)" != 0 ]; then
  echo "needs root (the memory part runs clients as $identities uids)" >&2
  exit 1
fi
. tools/bench-lib.sh
bench_setup
apid=""
stop_agent() {
  if [ -n "$apid" ]; then kill -TERM "$apid" 2>/dev/null || true; wait "$apid" 2>/dev/null || true; fi
  apid=""
}
trap 'stop_agent; bench_cleanup' EXIT

cpu_of() { cat /proc/"$1"/task/*/schedstat | awk '{s += $1} END {printf "%.0f", s}'; }
kib() { awk -v k="$2:" '$1 == k {print $2}' /proc/"$1"/status; }
anon() { awk '$1 == "Anonymous:" {print $2}' /proc/"$1"/smaps_rollup; }
# mimalloc returns freed pages to the system only on allocator activity
# after a delay; the agent re-reads its registration file every 5 s, so 6 s
# after a burst the transient memory (e.g. the TOML parse) is gone.
settle() { sleep 6; }
median() { sort -g | awk '{a[NR] = $1} END {m = (NR + 1) / 2; print (NR % 2) ? a[m] : (a[m - 0.5] + a[m + 0.5]) / 2}'; }

cat >"$work/ca.toml" <<EOF
trust_domain = "cluster.local"
[authority]
dir = "$work/ca"
[server]
grpc_addr = "127.0.0.1:$grpc_port"
admin_addr = "127.0.0.1:$admin_port"
[[authenticators]]
type = "development"
[authorization]
node_agents = ["spiffe://cluster.local/ns/sigil/sa/agent"]
unbounded_impersonation = true
EOF
(cd "$work" && exec "$sigil" ca serve --config "$work/ca.toml" >>"$work/serve.log" 2>&1) &
pid=$!
wait_ready
echo "dev:sigil:agent" >"$work/agent-token"
echo "dev:default:app" >"$work/app-token"
mkdir -p "$work/cold" "$work/node"
chmod 755 "$work" "$work/node"

agent_config() { # $1: mode, $2: socket dir, $3: admin address, $4: extra TOML
  cat <<EOF
mode = "$1"
$4
[ca]
address = "https://127.0.0.1:$grpc_port"
server_name = "localhost"
roots_file = "$work/ca/root-cert.pem"
token_file = "$work/$([ "$1" = node ] && echo agent || echo app)-token"
[certificates]
idle_drop = "1h"
[sds]
socket = "$2/sds.sock"
mode = 0o600
[workload_api]
socket = "$2/workload.sock"
mode = $([ "$1" = node ] && echo 0o666 || echo 0o600)
[admin]
addr = "$3"
EOF
}
start_agent() { # $1: config file, $2: taskset CPU list; waits for /readyz
  (exec taskset -c "$2" "$sigil" agent --config "$1" >>"$work/agent.log" 2>&1) &
  apid=$!
  for _ in $(seq 1 100); do
    kill -0 "$apid" 2>/dev/null || break
    curl -sf "http://127.0.0.1:$agent_admin/readyz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "the agent did not become ready; log:" >&2
  tail -20 "$work/agent.log" >&2
  exit 1
}

echo "== sigil agent benchmarks"
echo "- commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "- machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); load average at start $(cut -d' ' -f1-3 /proc/loadavg)"

echo
echo "== 1. SDS: rotation to push on $sds_streams streams (goal p99 < 20 ms), $sds_rounds rotations"
for run in $(seq 1 "$sds_runs"); do
  echo "-- run $run (load average $(cut -d' ' -f1 /proc/loadavg))"
  "$sigil" bench agent sds --streams "$sds_streams" --channels $(((sds_streams + 49) / 50)) \
    --rounds "$sds_rounds" --socket "$work/sds-bench.sock"
done

echo
echo "== 2. memory: a node agent holding $identities identities (goal < 48 MiB)"
{
  echo "# one entry per uid"
  for i in $(seq 0 $((identities - 1))); do
    printf '[[entry]]\nspiffe_id = "spiffe://cluster.local/ns/bench/sa/w%d"\nselectors = ["unix:uid:%d"]\n' "$i" $((uid_base + i))
  done
} >"$work/entries.toml"
agent_config node "$work/node" "127.0.0.1:$agent_admin" \
  "[attestation]
registration_file = \"$work/entries.toml\"" >"$work/node.toml"
start_agent "$work/node.toml" "0-$(($(nproc) - 1))"
settle
rss0="$(kib "$apid" VmRSS)"; anon0="$(anon "$apid")"; hwm0="$(kib "$apid" VmHWM)"
"$sigil" bench agent fetch-as --socket "$work/node/workload.sock" --uid-base "$uid_base" --count 1 >/dev/null
settle
rss1="$(kib "$apid" VmRSS)"; anon1="$(anon "$apid")"
t0="$(date +%s.%N)"
"$sigil" bench agent fetch-as --socket "$work/node/workload.sock" --uid-base $((uid_base + 1)) \
  --count $((identities - 1)) --parallel 4
t1="$(date +%s.%N)"
rss_now="$(kib "$apid" VmRSS)"
settle
rss2="$(kib "$apid" VmRSS)"; anon2="$(anon "$apid")"; hwm2="$(kib "$apid" VmHWM)"
held="$(curl -sf "http://127.0.0.1:$agent_admin/metrics" | awk '/^sigil_agent_identities / {print $2}')"
printf 'fetched in %.1f s; identities held (sigil_agent_identities): %s\n' "$(echo "$t1 - $t0" | bc -l)" "${held:-n/a}"
echo "| agent state | VmRSS | of which anonymous |"
echo "|---|---|---|"
echo "| idle, $identities entries loaded (VmHWM $hwm0 KiB: the TOML parse) | $rss0 KiB | $anon0 KiB |"
echo "| 1 identity (CA connection up) | $rss1 KiB | $anon1 KiB |"
echo "| $identities identities, right after the last fetch | $rss_now KiB | |"
printf '| %s identities, settled | **%s KiB = %.1f MiB** (VmHWM %s KiB = %.1f MiB) | %s KiB |\n' \
  "$identities" "$rss2" "$(echo "$rss2 / 1024" | bc -l)" "$hwm2" "$(echo "$hwm2 / 1024" | bc -l)" "$anon2"
printf 'per identity (settled, from 1 identity): %.2f KiB RSS, %.2f KiB anonymous\n' \
  "$(echo "($rss2 - $rss1) / ($identities - 1)" | bc -l)" "$(echo "($anon2 - $anon1) / ($identities - 1)" | bc -l)"
stop_agent

echo
echo "== 3. cold start to the first X.509-SVID, $runs runs (goal < 25 ms)"
agent_config sidecar "$work/cold" "127.0.0.1:0" \
  "[attestation]
identity = \"spiffe://cluster.local/ns/default/sa/app\"" >"$work/cold.toml"
"$sigil" bench agent cold-start --config "$work/cold.toml" --socket "$work/cold/workload.sock" \
  --runs "$runs" 2>>"$work/agent.log"

echo
echo "== 4. FetchJWTSVID per agent CPU-second: agent on CPU 1, load on CPU 0, $rounds rounds of ${secs}s each"
printf '[[entry]]\nspiffe_id = "spiffe://cluster.local/ns/bench/sa/jwt"\nselectors = ["unix:uid:0"]\n' >"$work/jwt-entries.toml"
agent_config node "$work/node" "127.0.0.1:$agent_admin" \
  "[attestation]
registration_file = \"$work/jwt-entries.toml\"" >"$work/jwt.toml"
start_agent "$work/jwt.toml" 1
settle
echo "reference: an idle node agent with one registration entry: VmRSS $(kib "$apid" VmRSS) KiB, anonymous $(anon "$apid") KiB"
jwt_run() { # extra flags; prints "answers/s answers-per-agent-CPU-s p50 p99"
  local c0 c1 w0 w1 out
  c0="$(cpu_of "$apid")"; w0="$(date +%s.%N)"
  out="$(taskset -c 0 "$sigil" bench agent jwt --socket "$work/node/workload.sock" --duration "${secs}s" "$@")"
  c1="$(cpu_of "$apid")"; w1="$(date +%s.%N)"
  n="$(echo "$out" | field requests: 2)"
  echo "$(echo "$out" | field throughput: 2) $(echo "$n / (($c1 - $c0) / 1000000000)" | bc -l) \
$(echo "($c1 - $c0) / 1000000000 / ($w1 - $w0)" | bc -l) $(echo "$out" | field latency: 3) $(echo "$out" | field latency: 5)"
}
jwt_run --trivial >/dev/null # warm-up; the first JWT call below mints
printf '%5s %14s %14s %10s %14s %14s %10s %8s %8s %7s\n' round base/s base/cpu-s base-cpu jwt/s jwt/cpu-s jwt-cpu p50-ms p99-ms ratio
: >"$work/jwt-rounds"
for r in $(seq 1 "$rounds"); do
  read -r brate bcpu bcores _ _ <<<"$(jwt_run --trivial)"
  read -r jrate jcpu jcores p50 p99 <<<"$(jwt_run)"
  ratio="$(echo "100 * $jcpu / $bcpu" | bc -l)"
  printf '%5d %14.0f %14.0f %10.2f %14.0f %14.0f %10.2f %8s %8s %6.1f%%\n' \
    "$r" "$brate" "$bcpu" "$bcores" "$jrate" "$jcpu" "$jcores" "$p50" "$p99" "$ratio"
  echo "$bcpu $jcpu $ratio $jrate $p99" >>"$work/jwt-rounds"
done
printf 'median: baseline %.0f answers per agent CPU-second; FetchJWTSVID %.0f (%.0f/s); ratio %.1f%%; p99 %.2f ms\n' \
  "$(awk '{print $1}' "$work/jwt-rounds" | median)" \
  "$(awk '{print $2}' "$work/jwt-rounds" | median)" \
  "$(awk '{print $4}' "$work/jwt-rounds" | median)" \
  "$(awk '{print $3}' "$work/jwt-rounds" | median)" \
  "$(awk '{print $5}' "$work/jwt-rounds" | median)"
stop_agent
echo "load average at end $(cut -d' ' -f1-3 /proc/loadavg)"
