# Shared by netns_env.sh and multipath_env.sh (sourced, not run): how a namespace script skips,
# and whether this kernel offers a qdisc.

skip() {
  echo "SKIP: $*" >&2
  exit 77
}

# qdisc_works KIND ARGS...: whether `tc qdisc add ... root KIND ARGS` works here, tried on a
# throwaway veth pair inside a probe namespace (the kernel may lack sch_netem or sch_tbf).
qdisc_works() {
  local probe=bccl-qdisc-probe-$$ ok=1
  ip netns add "$probe"
  ip -n "$probe" link add p0 type veth peer name p1
  tc -n "$probe" qdisc add dev p0 root "$@" 2>/dev/null && ok=0
  ip netns del "$probe"
  return $ok
}

have_netem() { qdisc_works netem delay 1ms; }
