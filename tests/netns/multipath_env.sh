#!/usr/bin/env bash
# Two stand-in hosts joined by several independent links, for multipath tests and benchmarks:
# network namespaces bmp-h0 and bmp-h1, and per path p a link mp<p> with 10.78.<p>.1 in bmp-h0
# and 10.78.<p>.2 in bmp-h1. A link is a veth pair; with --delay-ms it is a TUN device in each
# namespace joined by tests/netns/delay_switch.py (this kernel may lack netem; one switch per
# path, so paths stay independent). Rates are tc tbf on each end's egress. Only these namespaces
# are touched (names differ from netns_env.sh's, so both can exist at once).
#
#   multipath_env.sh up P [--rate R] [--delay-ms D] [--tun]    (re)creates them with P paths;
#                                   --tun: TUN + switch even without delay (a like-for-like base)
#   multipath_env.sh rate P R       sets path P's rate (both directions) to R, e.g. 50mbit
#   multipath_env.sh cut P          takes path P's link down at both ends
#   multipath_env.sh restore P      brings it back
#   multipath_env.sh txbytes NS P   bytes sent so far on path P from namespace bmp-h<NS>
#   multipath_env.sh down           removes everything
#   multipath_env.sh check          exit 0 if usable, else 77 with the reason
set -euo pipefail

readonly PREFIX=bmp-h SUBNET=10.78
readonly STATE=${BCCL_MULTIPATH_STATE:-/run/bccl-multipath}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly HERE
# shellcheck source=netns_lib.sh
source "$HERE/netns_lib.sh"

check() {
  # The same requirements as the other namespace tests (root, iproute2, netns), plus tbf.
  "$HERE/netns_env.sh" check
  qdisc_works tbf rate 100mbit burst 256kb latency 100ms ||
    skip "this kernel has no tbf qdisc (sch_tbf) to shape the paths"
}

down() {
  local f pid
  for f in "$STATE"/switch.*.pid; do
    [[ -f $f ]] || continue
    pid=$(cat "$f")
    # Only if it is still our switch: the pid may have been reused.
    if grep -q delay_switch "/proc/$pid/cmdline" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -f "$f"
  done
  local ns
  for ns in $(ip netns list | awk '{print $1}' | grep -E "^${PREFIX}[01]$" || true); do
    ip netns del "$ns"
  done
}

# shape NS DEV RATE [DELAY]: the egress qdisc of one end.
shape() {
  local ns=$1 dev=$2 rate=$3 delay=${4:-0}
  tc -n "$ns" qdisc del dev "$dev" root 2>/dev/null || true
  if [[ $delay != 0 && $MODE == netem ]]; then
    tc -n "$ns" qdisc add dev "$dev" root netem delay "${delay}ms" ${rate:+rate "$rate"} limit 100000
  elif [[ -n $rate ]]; then
    # A queue of 100 ms at the link rate: deep enough for TCP to fill it, shallow enough that a
    # slowed path shows up in the round trip quickly.
    tc -n "$ns" qdisc add dev "$dev" root tbf rate "$rate" burst 256kb latency 100ms
  fi
}

MODE=veth
up() {
  local n=${1:-}
  if ! [[ $n =~ ^[0-9]+$ && $n -ge 1 && $n -le 8 ]]; then
    echo "usage: $0 up P [--rate R] [--delay-ms D] [--tun]" >&2
    exit 2
  fi
  shift
  local delay=0 rate="" tun=0
  while [[ $# -gt 0 ]]; do
    case $1 in
      --delay-ms) delay=$2; shift 2 ;;
      --rate) rate=$2; shift 2 ;;
      --tun) tun=1; shift ;;
      *) echo "unknown option $1" >&2; exit 2 ;;
    esac
  done
  down
  mkdir -p "$STATE"
  if [[ $tun == 1 ]]; then
    command -v python3 >/dev/null || skip "python3 (for delay_switch.py) is missing"
    MODE=switch
  elif [[ $delay != 0 ]]; then
    if have_netem; then
      MODE=netem
    else
      command -v python3 >/dev/null ||
        skip "the kernel has no netem and python3 (for delay_switch.py) is missing"
      MODE=switch
    fi
  fi
  echo "$MODE" >"$STATE/mode"
  local k p
  for k in 0 1; do
    ip netns add "$PREFIX$k"
    ip -n "$PREFIX$k" link set lo up
  done
  for ((p = 0; p < n; p++)); do
    if [[ $MODE == switch ]]; then
      for k in 0 1; do
        ip -n "$PREFIX$k" tuntap add dev "mp$p" mode tun
        ip -n "$PREFIX$k" link set "mp$p" mtu 65000
      done
      rm -f "$STATE/switch.$p.ready"
      setsid python3 "$HERE/delay_switch.py" --hosts 2 --delay-ms "$delay" --prefix "$PREFIX" \
        --ifname "mp$p" --subnet "$SUBNET.$p" --ready "$STATE/switch.$p.ready" \
        </dev/null >"$STATE/switch.$p.log" 2>&1 &
      echo $! >"$STATE/switch.$p.pid"
      for _ in $(seq 100); do [[ -f $STATE/switch.$p.ready ]] && break; sleep 0.1; done
      if [[ ! -f $STATE/switch.$p.ready ]]; then
        cat "$STATE/switch.$p.log" >&2
        echo "delay switch for path $p did not start" >&2
        down
        exit 1
      fi
    else
      ip link add "mp$p" netns "${PREFIX}0" type veth peer name "mp$p" netns "${PREFIX}1"
    fi
    for k in 0 1; do
      ip -n "$PREFIX$k" addr add "$SUBNET.$p.$((k + 1))/24" dev "mp$p"
      ip -n "$PREFIX$k" link set "mp$p" up
      shape "$PREFIX$k" "mp$p" "$rate" "$delay"
    done
  done
  echo "$delay" >"$STATE/delay"
  local how="veth"
  [[ $MODE == netem ]] && how="veth, ${delay} ms one-way delay (netem)"
  [[ $MODE == switch ]] && how="TUN + delay_switch.py, ${delay} ms one-way delay (no netem here)"
  echo "multipath netns: ${PREFIX}0 <-> ${PREFIX}1 over $n path(s) mp0..mp$((n - 1))" \
    "($SUBNET.<p>.1 <-> $SUBNET.<p>.2; $how${rate:+; tbf $rate per direction})"
}

case ${1:-} in
  check) check ;;
  up) check; shift; up "$@" ;;
  rate)
    MODE=$(cat "$STATE/mode" 2>/dev/null || echo veth)
    for k in 0 1; do shape "$PREFIX$k" "mp$2" "$3" "$(cat "$STATE/delay" 2>/dev/null || echo 0)"; done
    ;;
  cut) for k in 0 1; do ip -n "$PREFIX$k" link set "mp$2" down; done ;;
  restore) for k in 0 1; do ip -n "$PREFIX$k" link set "mp$2" up; done ;;
  txbytes) ip netns exec "$PREFIX$2" cat "/sys/class/net/mp$3/statistics/tx_bytes" ;;
  down) [[ $(id -u) -eq 0 ]] || skip "needs root"; down ;;
  *) echo "usage: $0 up P [--rate R] [--delay-ms D] | rate P R | cut P | restore P |" \
       "txbytes NS P | down | check" >&2; exit 2 ;;
esac
