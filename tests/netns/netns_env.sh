#!/usr/bin/env bash
# Stand-in hosts on one machine: N network namespaces bccl-h0..h{N-1}, each with one interface
# bccl0 at 10.77.0.<k+1>/24, joined by a bridge in namespace bccl-sw, so that ranks started in
# different namespaces reach each other only through a real network stack (TCP over veth), and
# the link between "hosts" can be made slow: --delay-ms adds a one-way delay (tc netem on each
# host's egress; where the kernel has no netem, delay_switch.py joins the namespaces instead),
# --rate caps each host's egress (tc tbf, e.g. 1gbit). Only these namespaces are touched.
#
#   netns_env.sh up N [--delay-ms D] [--rate R]    (re)creates the namespaces
#   netns_env.sh down                               removes them (and the delay switch)
#   netns_env.sh check                              exit 0 if usable, else 77 with the reason
set -euo pipefail

readonly PREFIX=bccl-h SWITCH_NS=bccl-sw IFNAME=bccl0 SUBNET=10.77.0
readonly STATE=${BCCL_NETNS_STATE:-/run/bccl-netns}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly HERE
# shellcheck source=netns_lib.sh
source "$HERE/netns_lib.sh"

check() {
  [[ $(id -u) -eq 0 ]] || skip "needs root (creates network namespaces)"
  command -v ip >/dev/null || skip "iproute2's ip is not installed"
  command -v tc >/dev/null || skip "iproute2's tc is not installed"
  ip netns list >/dev/null 2>&1 || skip "ip netns is unavailable"
  # Creating one is the only real test (containers without CAP_SYS_ADMIN cannot).
  local probe=bccl-probe-$$
  ip netns add "$probe" 2>/dev/null || skip "cannot create network namespaces here"
  ip netns del "$probe"
}

ours() { ip netns list | awk '{print $1}' | grep -E "^(${PREFIX}[0-9]+|${SWITCH_NS})$" || true; }

down() {
  if [[ -f $STATE/switch.pid ]]; then
    local pid
    pid=$(cat "$STATE/switch.pid")
    # Only if it is still our switch: the pid may have been reused.
    if grep -q delay_switch "/proc/$pid/cmdline" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -f "$STATE/switch.pid"
  fi
  local ns
  for ns in $(ours); do ip netns del "$ns"; done
}

addr() { echo "$SUBNET.$(($1 + 1))"; }

up() {
  local n=${1:-}
  if ! [[ $n =~ ^[0-9]+$ && $n -ge 1 && $n -le 200 ]]; then
    echo "usage: $0 up N [--delay-ms D] [--rate R]" >&2
    exit 2
  fi
  shift
  local delay=0 rate=""
  while [[ $# -gt 0 ]]; do
    case $1 in
      --delay-ms) delay=$2; shift 2 ;;
      --rate) rate=$2; shift 2 ;;
      *) echo "unknown option $1" >&2; exit 2 ;;
    esac
  done
  if ! [[ $delay =~ ^[0-9]+([.][0-9]+)?$ ]]; then
    echo "--delay-ms wants milliseconds" >&2
    exit 2
  fi
  down
  mkdir -p "$STATE"
  local mode=bridge k
  if [[ $delay != 0 ]] && ! have_netem; then
    command -v python3 >/dev/null ||
      skip "the kernel has no netem and python3 (for delay_switch.py) is missing"
    mode=switch
  fi
  for ((k = 0; k < n; k++)); do
    ip netns add "$PREFIX$k"
    ip -n "$PREFIX$k" link set lo up
  done
  if [[ $mode == bridge ]]; then
    ip netns add "$SWITCH_NS"
    ip -n "$SWITCH_NS" link add br0 type bridge
    ip -n "$SWITCH_NS" link set br0 up
    for ((k = 0; k < n; k++)); do
      ip link add "$IFNAME" netns "$PREFIX$k" type veth peer name "h$k" netns "$SWITCH_NS"
      ip -n "$SWITCH_NS" link set "h$k" master br0 up
    done
  else
    for ((k = 0; k < n; k++)); do
      ip -n "$PREFIX$k" tuntap add dev "$IFNAME" mode tun
      ip -n "$PREFIX$k" link set "$IFNAME" mtu 65000
    done
    rm -f "$STATE/switch.ready"
    setsid python3 "$HERE/delay_switch.py" --hosts "$n" --delay-ms "$delay" --prefix "$PREFIX" \
      --ifname "$IFNAME" --subnet "$SUBNET" --ready "$STATE/switch.ready" \
      </dev/null >"$STATE/switch.log" 2>&1 &
    echo $! >"$STATE/switch.pid"
    for _ in $(seq 100); do [[ -f $STATE/switch.ready ]] && break; sleep 0.1; done
    if [[ ! -f $STATE/switch.ready ]]; then
      cat "$STATE/switch.log" >&2
      echo "delay switch did not start" >&2
      down
      exit 1
    fi
  fi
  for ((k = 0; k < n; k++)); do
    local ns=$PREFIX$k
    ip -n "$ns" addr add "$(addr "$k")/24" dev "$IFNAME"
    ip -n "$ns" link set "$IFNAME" up
    # netem's own rate option, else tbf: each host's egress is its link to the others.
    if [[ $mode == bridge && $delay != 0 ]]; then
      tc -n "$ns" qdisc add dev "$IFNAME" root netem delay "${delay}ms" ${rate:+rate "$rate"}
    elif [[ -n $rate ]]; then
      tc -n "$ns" qdisc add dev "$IFNAME" root tbf rate "$rate" burst 1mb latency 200ms
    fi
  done
  local how="no delay"
  if [[ $delay != 0 && $mode == bridge ]]; then
    how="${delay} ms one-way delay (tc netem)"
  elif [[ $delay != 0 ]]; then
    how="${delay} ms one-way delay (delay_switch.py: this kernel has no netem)"
  fi
  echo "netns: $n hosts ${PREFIX}0..${PREFIX}$((n - 1)) at $(addr 0)..$(addr $((n - 1)))" \
    "on $IFNAME; $how${rate:+; rate $rate}"
}

case ${1:-} in
  check) check ;;
  up) check; shift; up "$@" ;;
  down) [[ $(id -u) -eq 0 ]] || skip "needs root"; down ;;
  *) echo "usage: $0 up N [--delay-ms D] [--rate R] | down | check" >&2; exit 2 ;;
esac
