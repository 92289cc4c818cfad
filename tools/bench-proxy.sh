#!/usr/bin/env bash
# The proxy's benchmarks (issue 16), in one run on this machine: the same
# load against
#   direct   the backend itself;
#   sigil    a Sigil proxy pair: outbound listener (plain TCP in, mTLS out)
#            -> inbound listener (mTLS in) -> backend, L4 (`protocol = "tcp"`),
#            two `sigil proxy` processes;
#   haproxy  an HAProxy pair configured for the same mTLS: TLS 1.3 only,
#            ECDSA P-256 SPIFFE certificates, client certificate required
#            and verified against the same root on the inbound side, the
#            server's verified on the outbound side, no session resumption
#            on either side (`no-ssl-reuse`, `no-tls-tickets`; Sigil has
#            none), `mode tcp`.
#
#   tools/bench-proxy.sh [seconds per measurement]
#   (IDLE, RATE, SIGIL_BENCH_PORT, LOAD_CPU, PROXY_CPU; PATHS="direct sigil haproxy" for a subset)
#
# Needs root (installs HAProxy from Debian's packages if missing, raises
# the open-file limit for 10k connections through a pair) and 2 CPUs.
#
# Placement: the load tool and the backend (`sigil bench proxy ...`, one
# thread each) on CPU 0; both proxies of a pair on CPU 1, each with one
# worker thread (`nbthread 1`; `TOKIO_WORKER_THREADS=1`, the Sigil process's
# other threads - log writer, blocking pool - also on CPU 1 and counted).
# CPU is read from /proc/<pid>/stat (utime + stime, all threads) before and
# after each measurement; throughput is also given per CPU-second of the
# proxy processes, which stays comparable when the machine's speed drifts.
# Sigil logs its access log line per connection (info, to a file); HAProxy
# logs nothing.
#
# Measurements, per path, in this order:
#   idle       IDLE (default 10,000) connections opened through the pair and
#              held; RSS of each proxy before and while held, per connection;
#   closed     64 kept-alive connections, closed loop, 128-byte echo
#              requests: requests/s, p50/p99, requests per proxy CPU-second;
#   open       RATE (default 5,000) requests/s over 16 connections, each timed
#              from when it was due: p50/p99;
#   c1         one connection, closed loop: p50/p99 (the added p50 at
#              concurrency 1 is this minus direct's);
#   bulk       one connection streaming backend -> client: MB/s, MB per
#              proxy CPU-second;
#   pair-conn  new plain connections to the outbound side, one request
#              each (8 at once): each makes a new mTLS handshake between
#              the proxies; connections/s and CPU ms per connection of each;
#   handshake  new TLS 1.3 connections with a client certificate straight
#              to the inbound side (8 at once, the load tool as the client):
#              handshakes/s and the inbound proxy's CPU ms per handshake.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-10}"
idle_conns="${IDLE:-10000}"
rate="${RATE:-5000}"
# CPUs of the load tool + backend and of the proxies (LOAD_CPU=1 PROXY_CPU=1:
# everything on one CPU, no cross-CPU wake-ups, for the latency added at
# concurrency 1).
load_cpu="${LOAD_CPU:-0}"
proxy_cpu="${PROXY_CPU:-1}"
base="${SIGIL_BENCH_PORT:-18300}"
backend_port=$base
sigil_out=$((base + 1))
sigil_in=$((base + 2))
ha_out=$((base + 3))
ha_in=$((base + 4))
admin_out=$((base + 5))
admin_in=$((base + 6))
td=bench.local

if [ "$(id -u)" != 0 ]; then
  echo "needs root (installs haproxy, raises the open-file limit)" >&2
  exit 1
fi
if [ "$(nproc)" -lt 2 ]; then
  echo "needs at least 2 CPUs (load and proxies pinned apart)" >&2
  exit 1
fi
if ! command -v haproxy >/dev/null; then
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q haproxy >/dev/null
fi
# Each proxy holds two descriptors per connection. Raise the soft limit
# as far as allowed; without CAP_SYS_RESOURCE the hard limit caps the idle
# connections (a container here has 20,000: 9,900 connections).
ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
max_idle=$((($(ulimit -n) - 200) / 2))
if [ "$idle_conns" -gt "$max_idle" ]; then
  echo "- open-file limit $(ulimit -n): $max_idle idle connections instead of $idle_conns"
  idle_conns=$max_idle
fi
cargo build --release -q -p sigil-cli
sigil="$PWD/target/release/sigil"
work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# -- certificates: a root (sigil ca init) and two SPIFFE leaves (ECDSA P-256)
"$sigil" ca init --dir "$work/ca" --trust-domain "$td" >/dev/null
ca="$work/ca/root-cert.pem"
leaf() { # $1: name
  openssl ecparam -name prime256v1 -genkey -noout 2>/dev/null |
    openssl pkcs8 -topk8 -nocrypt -out "$work/$1-key.pem"
  openssl req -new -key "$work/$1-key.pem" -subj "/O=bench" -out "$work/$1.csr" 2>/dev/null
  "$sigil" ca sign --dir "$work/ca" --csr "$work/$1.csr" --id "spiffe://$td/ns/bench/sa/$1" \
    --ttl 24h --out "$work/$1-chain.pem"
  # HAProxy's `crt`: the chain and the key in one file.
  cat "$work/$1-chain.pem" "$work/$1-key.pem" >"$work/$1-haproxy.pem"
}
leaf client
leaf server

# -- processes
ticks=$(getconf CLK_TCK)
cpu_s() { awk -v t="$ticks" '{printf "%.3f", ($14 + $15) / t}' /proc/"$1"/stat; }
rss_kib() { awk '$1 == "VmRSS:" {print $2}' /proc/"$1"/status; }
kv() { tr ' ' '\n' | awk -F= -v k="$1" '$1 == k {print $2}'; }
calc() { awk "BEGIN {printf \"$1\", $2}"; }

started=""
start() { # $1: log name, then the command; sets $started to its pid
  ("${@:2}" >>"$work/$1.log" 2>&1) &
  started=$!
  pids+=("$started")
}
wait_port() { # $1: port, $2: pid
  for _ in $(seq 1 100); do
    kill -0 "$2" 2>/dev/null || break
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on port $1; logs:" >&2
  tail -n 20 "$work"/*.log >&2
  exit 1
}
stop() { # $1: pid
  kill -TERM "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

start backend taskset -c "$load_cpu" "$sigil" bench proxy backend --listen "127.0.0.1:$backend_port" --duration 1h
backend_pid=$started
wait_port "$backend_port" "$backend_pid"

sigil_config() { # $1: mode, $2: listen port, $3: target port, $4: leaf name
  cat <<EOF
trust_domain = "$td"
max_connections = $((idle_conns + 50))
[credentials.files]
cert_chain = "$work/$4-chain.pem"
key = "$work/$4-key.pem"
bundle = "$ca"
[[listeners]]
mode = "$1"
listen = "127.0.0.1:$2"
target = "127.0.0.1:$3"
protocol = "tcp"
EOF
}
sigil_config outbound "$sigil_out" "$sigil_in" client >"$work/sigil-out.toml"
sigil_config inbound "$sigil_in" "$backend_port" server >"$work/sigil-in.toml"

haproxy_global() {
  cat <<EOF
global
  nbthread 1
  maxconn $((idle_conns + 50))
  ssl-default-bind-options ssl-min-ver TLSv1.3 no-tls-tickets
  ssl-default-server-options ssl-min-ver TLSv1.3 no-tls-tickets
defaults
  mode tcp
  maxconn $((idle_conns + 50))
  timeout connect 5s
  timeout client 1h
  timeout server 1h
EOF
}
{
  haproxy_global
  cat <<EOF
frontend out
  bind 127.0.0.1:$ha_out
  default_backend peer
backend peer
  server in 127.0.0.1:$ha_in ssl verify required ca-file $ca crt $work/client-haproxy.pem no-ssl-reuse
EOF
} >"$work/haproxy-out.cfg"
{
  haproxy_global
  cat <<EOF
frontend in
  bind 127.0.0.1:$ha_in ssl crt $work/server-haproxy.pem ca-file $ca verify required
  default_backend app
backend app
  server app 127.0.0.1:$backend_port
EOF
} >"$work/haproxy-in.cfg"

proxy_cmd=(proxy)
out_pid=""
in_pid=""
start_pair() { # $1: sigil | haproxy
  case "$1" in
  sigil)
    start sigil-in env TOKIO_WORKER_THREADS=1 taskset -c "$proxy_cpu" \
      "$sigil" "${proxy_cmd[@]}" --config "$work/sigil-in.toml" --admin-addr "127.0.0.1:$admin_in"
    in_pid=$started
    start sigil-out env TOKIO_WORKER_THREADS=1 taskset -c "$proxy_cpu" \
      "$sigil" "${proxy_cmd[@]}" --config "$work/sigil-out.toml" --admin-addr "127.0.0.1:$admin_out"
    out_pid=$started
    wait_port "$sigil_in" "$in_pid"
    wait_port "$sigil_out" "$out_pid"
    ;;
  haproxy)
    start haproxy-in taskset -c "$proxy_cpu" haproxy -db -f "$work/haproxy-in.cfg"
    in_pid=$started
    start haproxy-out taskset -c "$proxy_cpu" haproxy -db -f "$work/haproxy-out.cfg"
    out_pid=$started
    wait_port "$ha_in" "$in_pid"
    wait_port "$ha_out" "$out_pid"
    ;;
  esac
}

load() { taskset -c "$load_cpu" "$sigil" bench proxy "$@"; }
# Figures go to $work/figures as "path key value".
fig() { echo "$1 $2 $3" >>"$work/figures"; }
get() { awk -v p="$1" -v k="$2" '$1 == p && $2 == k {print $3}' "$work/figures"; }

cpu_before=""
cpu_mark() { # CPU seconds of both proxies (0 for direct)
  if [ -n "$in_pid" ]; then
    echo "$(cpu_s "$out_pid") $(cpu_s "$in_pid")"
  else
    echo "0 0"
  fi
}
cpu_since() { # $1: mark; prints "out_s in_s"
  local now
  now=$(cpu_mark)
  awk -v a="$1" -v b="$now" 'BEGIN {split(a, x, " "); split(b, y, " "); printf "%.3f %.3f", y[1] - x[1], y[2] - x[2]}'
}

run_path() { # $1: direct | sigil | haproxy
  local path=$1 addr line mark used out_s in_s n
  case "$path" in
  direct) addr="127.0.0.1:$backend_port"; out_pid=""; in_pid="" ;;
  sigil) start_pair sigil; addr="127.0.0.1:$sigil_out" ;;
  haproxy) start_pair haproxy; addr="127.0.0.1:$ha_out" ;;
  esac
  echo "-- $path (load average $(cut -d' ' -f1 /proc/loadavg))"
  # One connection first: everything started, credentials loaded.
  load closed --addr "$addr" --connections 1 --warmup 0s --duration 200ms >/dev/null

  if [ -n "$in_pid" ]; then
    local rss_out0 rss_in0 rss_out1 rss_in1
    sleep 1
    rss_out0=$(rss_kib "$out_pid")
    rss_in0=$(rss_kib "$in_pid")
    rm -f "$work/idle.ready"
    load idle --addr "$addr" --connections "$idle_conns" --hold 600s \
      --ready-file "$work/idle.ready" >"$work/idle.out" &
    local idle_pid=$!
    for _ in $(seq 1 1200); do [ -s "$work/idle.ready" ] && break; sleep 0.1; done
    sleep 2
    rss_out1=$(rss_kib "$out_pid")
    rss_in1=$(rss_kib "$in_pid")
    line=$(cat "$work/idle.ready" 2>/dev/null || echo "idle open=0")
    kill -TERM "$idle_pid" 2>/dev/null || true
    wait "$idle_pid" 2>/dev/null || true
    n=$(echo "$line" | kv open)
    echo "   idle: $line; RSS outbound ${rss_out0} -> ${rss_out1} KiB, inbound ${rss_in0} -> ${rss_in1} KiB"
    fig "$path" idle_open "$n"
    fig "$path" idle_out_kb "$(calc %.1f "($rss_out1 - $rss_out0) * 1.024 / ($n > 0 ? $n : 1)")"
    fig "$path" idle_in_kb "$(calc %.1f "($rss_in1 - $rss_in0) * 1.024 / ($n > 0 ? $n : 1)")"
    fig "$path" rss_in_before_kib "$rss_in0"
    fig "$path" rss_out_before_kib "$rss_out0"
    # Let the closed connections drain through both proxies.
    sleep 3
  fi

  mark=$(cpu_mark)
  line=$(load closed --addr "$addr" --connections 64 --warmup 1s --duration "${secs}s")
  used=$(cpu_since "$mark")
  echo "   closed: $line; proxy CPU s (out in): $used"
  n=$(echo "$line" | kv requests)
  fig "$path" rps "$(echo "$line" | kv rps)"
  fig "$path" closed_p50 "$(echo "$line" | kv p50_us)"
  fig "$path" closed_p99 "$(echo "$line" | kv p99_us)"
  # CPU over warm-up + measurement; requests over the measurement only:
  # scaled by the share of the run measured.
  [ -z "$in_pid" ] || fig "$path" rps_per_cpu "$(awk -v n="$n" -v u="$used" -v s="$secs" 'BEGIN {split(u, c, " "); t = (c[1] + c[2]) * s / (s + 1); printf "%.0f", (t > 0 ? n / t : 0)}')"

  line=$(load open --addr "$addr" --rate "$rate" --connections 16 --warmup 1s --duration "${secs}s")
  echo "   open: $line"
  fig "$path" open_p50 "$(echo "$line" | kv p50_us)"
  fig "$path" open_p99 "$(echo "$line" | kv p99_us)"

  line=$(load closed --addr "$addr" --connections 1 --warmup 1s --duration "${secs}s")
  echo "   c1: $line"
  fig "$path" c1_p50 "$(echo "$line" | kv p50_us)"
  fig "$path" c1_p99 "$(echo "$line" | kv p99_us)"

  mark=$(cpu_mark)
  line=$(load bulk --addr "$addr" --warmup 1s --duration "${secs}s")
  used=$(cpu_since "$mark")
  echo "   bulk: $line; proxy CPU s (out in): $used"
  fig "$path" bulk_mbs "$(echo "$line" | kv mb_per_s)"
  [ -z "$in_pid" ] || fig "$path" bulk_mb_per_cpu "$(awk -v l="$line" -v u="$used" -v s="$secs" 'BEGIN {split(u, c, " "); t = (c[1] + c[2]); split(l, f, " "); for (i in f) if (f[i] ~ /^bytes=/) b = substr(f[i], 7); printf "%.0f", (t > 0 ? b / 1e6 / (t * s / (s + 1)) : 0)}')"

  mark=$(cpu_mark)
  line=$(load handshake --addr "$addr" --concurrency 8 --warmup 1s --duration "${secs}s")
  used=$(cpu_since "$mark")
  echo "   pair-conn: $line; proxy CPU s (out in): $used"
  n=$(echo "$line" | kv count)
  fig "$path" conn_per_s "$(echo "$line" | kv per_s)"
  [ -z "$in_pid" ] || fig "$path" conn_out_ms "$(awk -v n="$n" -v u="$used" -v s="$secs" 'BEGIN {split(u, c, " "); printf "%.3f", (n > 0 ? c[1] * 1000 * s / (s + 1) / n : 0)}')"
  [ -z "$in_pid" ] || fig "$path" conn_in_ms "$(awk -v n="$n" -v u="$used" -v s="$secs" 'BEGIN {split(u, c, " "); printf "%.3f", (n > 0 ? c[2] * 1000 * s / (s + 1) / n : 0)}')"

  if [ -n "$in_pid" ]; then
    local in_addr
    in_addr="127.0.0.1:$([ "$path" = sigil ] && echo "$sigil_in" || echo "$ha_in")"
    mark=$(cpu_mark)
    line=$(load handshake --addr "$in_addr" --concurrency 8 --warmup 1s --duration "${secs}s" \
      --cert "$work/client-chain.pem" --key "$work/client-key.pem" --ca "$ca" --trust-domain "$td")
    used=$(cpu_since "$mark")
    echo "   handshake: $line; proxy CPU s (out in): $used"
    n=$(echo "$line" | kv count)
    fig "$path" hs_per_s "$(echo "$line" | kv per_s)"
    fig "$path" hs_in_ms "$(awk -v n="$n" -v u="$used" -v s="$secs" 'BEGIN {split(u, c, " "); printf "%.3f", (n > 0 ? c[2] * 1000 * s / (s + 1) / n : 0)}')"
    stop "$out_pid"
    stop "$in_pid"
  fi
}

echo "== sigil proxy benchmarks"
echo "- commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "- machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo); kernel $(uname -r); load average at start $(cut -d' ' -f1-3 /proc/loadavg)"
echo "- $(haproxy -v | head -1 | cut -d' ' -f1-3), $(openssl version | cut -d' ' -f1-2); $("$sigil" --version)"
echo "- ${secs}s per measurement (after 1s warm-up); open loop at $rate req/s; $idle_conns idle connections"
for path in ${PATHS:-direct sigil haproxy}; do
  run_path "$path"
done

echo
echo "== summary (ratio: Sigil / HAProxy; > 1 is better for Sigil on rates, < 1 on costs)"
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", (b > 0 ? a / b : 0)}'; }
row() { # $1: label, $2: key, $3: better (high|low)
  local d s h
  d=$(get direct "$2")
  s=$(get sigil "$2")
  h=$(get haproxy "$2")
  printf '| %s | %s | %s | %s | %s |\n' "$1" "${d:--}" "$s" "$h" "$(ratio "$s" "$h")"
}
echo "| figure | direct | Sigil pair | HAProxy pair | Sigil / HAProxy |"
echo "| --- | ---: | ---: | ---: | ---: |"
row "req/s, 64 conns, closed loop" rps
row "req per proxy CPU-second (both proxies)" rps_per_cpu
row "p50 µs, 64 conns" closed_p50
row "p99 µs, 64 conns" closed_p99
row "p50 µs, open loop $rate/s" open_p50
row "p99 µs, open loop $rate/s" open_p99
row "p50 µs, concurrency 1" c1_p50
row "p99 µs, concurrency 1" c1_p99
row "bulk MB/s, one connection" bulk_mbs
row "bulk MB per proxy CPU-second" bulk_mb_per_cpu
row "new connections/s through the pair" conn_per_s
row "CPU ms per new connection, outbound" conn_out_ms
row "CPU ms per new connection, inbound" conn_in_ms
row "mTLS handshakes/s to the inbound" hs_per_s
row "inbound CPU ms per mTLS handshake" hs_in_ms
row "idle connections held" idle_open
row "KB per idle connection, outbound" idle_out_kb
row "KB per idle connection, inbound" idle_in_kb
added() { # $1: path, $2: key; the p50 added over direct's
  local v d
  v=$(get "$1" "$2")
  d=$(get direct "$2")
  if [ -n "$v" ] && [ -n "$d" ]; then calc %.0f "$v - $d"; else echo "-"; fi
}
echo
echo "- p50 added at concurrency 1: Sigil $(added sigil c1_p50) µs, HAProxy $(added haproxy c1_p50) µs"
echo "- p50 added, open loop: Sigil $(added sigil open_p50) µs, HAProxy $(added haproxy open_p50) µs"
