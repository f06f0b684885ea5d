#!/usr/bin/env bash
# compare_peers.sh: bccl against its peers on this machine, one table.
#
#   bench/peers/compare_peers.sh [--budget-minutes N] [--quick] [--out FILE] [--build-dir DIR]
#                                [--no-build] [--ranks 2,4,8] [--bind core|none] [--rounds K]
#
# Ours (bcclrun + the perf tools, over shm and over tcp) and the peers (Open MPI over shared
# memory and over TCP, MPICH, Gloo over TCP) take turns on every cell: per collective, rank count
# and size every library runs before the next cell starts, so a change in the machine's load hits
# all of them alike. Every run is under `timeout`; every result is checked on every rank.
#
# Definitions (nccl-tests'): size = bytes per rank (allreduce), total received (allgather), total
# sent (reduce-scatter); algbw = size / time; busbw = algbw * 2(n-1)/n (allreduce) or (n-1)/n
# (the others); time = mean per iteration of the timed loop, slowest rank.
#
# Binding (--bind, default core): every library's ranks are pinned alike, rank r to the r-th
# CPU this script may use, round robin (bcclrun --bind core; Open MPI --map-by core --bind-to
# core, overload allowed; MPICH -bind-to core; Gloo's ranks under taskset). Left to themselves
# the launchers differ: Open MPI binds 2 ranks to cores and leaves oversubscribed ranks unbound,
# MPICH and bcclrun bind nothing, and where the kernel puts unbound ranks moves results by up
# to 1.5x between runs on 2 cores. --bind none runs every launcher with its own defaults.
#
# Rounds (--rounds, default 2): every cell runs all libraries in turn, then all of them again,
# and each library's best round counts (a wrong result in any round marks it WRONG). Before
# every run, xcore.c times how fast one CPU hands data to the other: on this VM the host moves
# the vCPUs between placements where that rate differs 4x for seconds to minutes (memcpy's
# bandwidth does not move), and every shared-memory collective with it. Each result line keeps
# the rate it ran at; the table marks with '*' a number whose run saw less than half the best
# rate of the whole run, so a ratio across such a cell compares two machines, not two libraries.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
BUILD="$ROOT/build-peers"
BUDGET_MIN=20
QUICK=0
OUT=""
BUILD_BCCL=1
RANKS_ARG=""
BIND=core
ROUNDS=2

COLLS=(allreduce allgather reducescatter)
# Ours and theirs, in the order they take turns; ours-shm is compared with every peer (a peer
# over TCP is still a way to do the job on one host), ours-tcp with the TCP peers only.
LIBS=(ours-shm openmpi-shm mpich ours-tcp openmpi-tcp gloo-tcp)
SHM_PEERS=(openmpi-shm mpich openmpi-tcp gloo-tcp)
TCP_PEERS=(openmpi-tcp gloo-tcp)
PACKAGES=(openmpi-bin libopenmpi-dev mpich libmpich-dev libgloo-dev g++)

usage() {
  cat <<EOF
usage: $0 [--budget-minutes N] [--quick] [--out FILE] [--build-dir DIR] [--no-build]
          [--ranks LIST]
  --budget-minutes N  whole run within about N minutes (default 20): below 20, fewer iterations
                      (the large sizes are where the time goes); runs that no longer fit the
                      budget are skipped and shown as skip:budget
  --quick             2 and 4 ranks at 8 B and 1 MiB only (a minute or two; for testing)
  --out FILE          results file (default bench/peers/results-<date>.txt)
  --build-dir DIR     bccl build directory (default build-peers); peer binaries go in DIR/peers
  --no-build          use bccl's tools in DIR as they are (say, a build of a known commit)
  --ranks LIST        rank counts, comma-separated (default 2,4,8; --quick: 2,4)
  --bind core|none    pin every library's rank r to the r-th allowed CPU (default core), or
                      leave placement to each launcher's defaults (none)
  --rounds K          run every cell K times, libraries alternating, best round counts
                      (default 2)
EOF
}

parse_args() {
  while (($#)); do
    case "$1" in
      --budget-minutes) BUDGET_MIN="${2:?}"; shift 2 ;;
      --quick) QUICK=1; shift ;;
      --out) OUT="${2:?}"; shift 2 ;;
      --build-dir) BUILD="${2:?}"; shift 2 ;;
      --no-build) BUILD_BCCL=0; shift ;;
      --ranks) RANKS_ARG="${2:?}"; shift 2 ;;
      --bind) BIND="${2:?}"; shift 2 ;;
      --rounds) ROUNDS="${2:?}"; shift 2 ;;
      -h|--help) usage; exit 0 ;;
      *) usage >&2; exit 2 ;;
    esac
  done
  if ! [[ "$BUDGET_MIN" =~ ^[1-9][0-9]*$ ]]; then
    echo "bad --budget-minutes: $BUDGET_MIN" >&2
    exit 2
  fi
  if ! [[ "$ROUNDS" =~ ^[1-9]$ ]]; then
    echo "bad --rounds: $ROUNDS (1-9)" >&2
    exit 2
  fi
  if [[ $BIND != core && $BIND != none ]]; then
    echo "bad --bind: $BIND (core or none)" >&2
    exit 2
  fi
  if [[ -n $RANKS_ARG && ! $RANKS_ARG =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]]; then
    echo "bad --ranks: $RANKS_ARG" >&2
    exit 2
  fi
  [[ -n "$OUT" ]] || OUT="$HERE/results-$(date +%Y%m%d-%H%M%S).txt"
  PEER_BIN="$BUILD/peers"
}

log() { printf '%s\n' "$*" >&2; }

# ---- setup -------------------------------------------------------------------------------------

# Debian's packages; apt-get update only when something is missing (it is slow and needs network).
ensure_packages() {
  local missing=() p
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  ((${#missing[@]} == 0)) && return
  log "installing: ${missing[*]}"
  local sudo=()
  ((EUID == 0)) || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >&2
}

# Rebuilds a binary when it is missing or older than any of its sources.
stale() {
  local bin="$1" src
  shift
  [[ -x "$bin" ]] || return 0
  for src; do [[ "$src" -nt "$bin" ]] && return 0; done
  return 1
}

build_bccl() {
  local tools=(bcclrun all_reduce_perf all_gather_perf reduce_scatter_perf) t
  if ((BUILD_BCCL)); then
    # -j2: the machine has two cores, shared with whoever else is building.
    [[ -f "$BUILD/build.ninja" ]] ||
      cmake -S "$ROOT" -B "$BUILD" -G Ninja -DBCCL_BUILD_TESTS=OFF -DCMAKE_BUILD_TYPE=Release >&2
    ninja -C "$BUILD" -j2 "${tools[@]}" >&2 || {
      log "bccl did not build (a tree mid-edit?): fix it, or pass --no-build --build-dir DIR"
      log "to use the tools of a build that works"
      exit 1
    }
  fi
  for t in "${tools[@]}"; do
    [[ -x "$BUILD/$t" ]] || { log "missing $BUILD/$t"; exit 1; }
  done
}

build_peers() {
  mkdir -p "$PEER_BIN"
  local cflags=(-O2 -Wall -Wextra) common="$HERE/peer_common.h"
  # The two MPIs' plain mpicc/mpirun names are alternatives that point at one of them; the
  # suffixed names are unambiguous.
  stale "$PEER_BIN/mpi_coll_bench.openmpi" "$HERE/mpi_coll_bench.c" "$common" &&
    mpicc.openmpi "${cflags[@]}" -o "$PEER_BIN/mpi_coll_bench.openmpi" "$HERE/mpi_coll_bench.c"
  stale "$PEER_BIN/mpi_coll_bench.mpich" "$HERE/mpi_coll_bench.c" "$common" &&
    mpicc.mpich "${cflags[@]}" -o "$PEER_BIN/mpi_coll_bench.mpich" "$HERE/mpi_coll_bench.c"
  stale "$PEER_BIN/gloo_coll_bench" "$HERE/gloo_coll_bench.cc" "$common" &&
    g++ -std=c++17 "${cflags[@]}" -o "$PEER_BIN/gloo_coll_bench" "$HERE/gloo_coll_bench.cc" \
      -lgloo -pthread
  stale "$PEER_BIN/membw" "$HERE/membw.c" &&
    gcc "${cflags[@]}" -o "$PEER_BIN/membw" "$HERE/membw.c" -pthread
  stale "$PEER_BIN/xcore" "$HERE/xcore.c" &&
    gcc "${cflags[@]}" -o "$PEER_BIN/xcore" "$HERE/xcore.c" -pthread
  return 0
}

# ---- what to run -------------------------------------------------------------------------------

configure_plan() {
  if ((QUICK)); then
    NRANKS_LIST=(2 4)
    SIZES=(8 1048576)
  else
    NRANKS_LIST=(2 4 8)
    SIZES=(8 65536 1048576 67108864 268435456)
  fi
  [[ -z $RANKS_ARG ]] || IFS=, read -r -a NRANKS_LIST <<<"$RANKS_ARG"
  DEADLINE_US=$((${EPOCHREALTIME/./} + BUDGET_MIN * 60 * 1000000))
  # Iteration counts are written for a 20-minute budget; a smaller one scales them down (the
  # large sizes are where the time goes), never below 3 timed iterations.
  SCALE_PCT=$((BUDGET_MIN >= 20 ? 100 : BUDGET_MIN * 5))
}

# "warmups max_iters max_seconds timeout_seconds" for a size. The peers cut their timed loop to
# max_seconds (they crawl when oversubscribed); ours runs max_iters.
plan_for() {
  local size=$1 w n s t
  if ((QUICK)); then
    case $size in 8) w=10 n=200 s=0.5 t=30 ;; *) w=3 n=30 s=1.0 t=30 ;; esac
    echo "$w $n $s $t"
    return
  fi
  # Enough iterations that a sub-microsecond call is timed over milliseconds: 500 iterations
  # of a 0.2 us allreduce (0.1 ms) moved by a third between runs.
  case $size in
    8) w=200 n=5000 s=1.0 t=60 ;;
    65536) w=20 n=500 s=1.0 t=60 ;;
    1048576) w=5 n=30 s=1.5 t=60 ;;
    67108864) w=1 n=6 s=3 t=150 ;;
    *) w=1 n=3 s=4 t=300 ;;
  esac
  n=$((n * SCALE_PCT / 100))
  ((n >= 3)) || n=3
  s=$(awk -v s="$s" -v p="$SCALE_PCT" 'BEGIN { printf "%.2f", s * p / 100 }')
  echo "$w $n $s $t"
}

# A guess at a run's wall time before one like it has run: launch plus the loops.
default_estimate_s() {
  case $1 in 8 | 65536 | 1048576) echo 4 ;; 67108864) echo 20 ;; *) echo 60 ;; esac
}

human_size() {
  local b=$1
  if ((b >= 1048576)); then echo "$((b / 1048576))M"
  elif ((b >= 1024)); then echo "$((b / 1024))K"
  else echo "${b}B"; fi
}

# ---- launchers: each prints RESULT lines on stdout -------------------------------------------

perf_tool() {
  case $1 in
    allreduce) echo all_reduce_perf ;;
    allgather) echo all_gather_perf ;;
    *) echo reduce_scatter_perf ;;
  esac
}

# Ours: the perf tool's nccl-tests table (blocking calls, -z 1, as MPI_Allreduce and Gloo are),
# timed out of place only (-O 1), as the peers' benchmarks time it, turned into a RESULT line.
run_ours() {
  local transport=$1 coll=$2 n=$3 size=$4 warm=$5 iters=$6 tmo=$7
  local env=()
  [[ $transport == tcp ]] && env=(-x BCCL_TRANSPORT=tcp)
  [[ $BIND == core ]] && env+=(--bind core)
  timeout -k 10 $((tmo + 10)) "$BUILD/bcclrun" --timeout "$tmo" -n "$n" "${env[@]}" \
    "$BUILD/$(perf_tool "$coll")" -b "$size" -e "$size" -f 2 -c 1 -z 1 -O 1 -n "$iters" -w "$warm" |
    awk -v lib="ours-$transport" -v coll="$coll" -v n="$n" -v req="$size" -v iters="$iters" '
      { sub(/^\[[0-9]+\] */, "") }
      /^#/ || NF < 9 || $1 !~ /^[0-9]+$/ { next }
      { wrong = $9 + (NF >= 13 && $13 ~ /^[0-9]+$/ ? $13 : 0)
        printf "RESULT lib=%s coll=%s nranks=%d req=%s bytes=%s count=%s iters=%d time_us=%s algbw=%s busbw=%s wrong=%d\n",
               lib, coll, n, req, $1, $2, iters, $6, $7, $8, wrong }'
  return "${PIPESTATUS[0]}"
}

run_openmpi() {
  local transport=$1 coll=$2 n=$3 size=$4 warm=$5 iters=$6 secs=$7 tmo=$8
  # Debian's Open MPI prefers its UCX PML, which ignores the btl choice: ob1 makes the btl count.
  # vader is its shared-memory btl. --oversubscribe: more ranks than the 2 cores.
  # shellcheck disable=SC2054  # the commas are Open MPI's list syntax
  local mca=(--mca pml ob1 --mca btl self,vader)
  # shellcheck disable=SC2054
  [[ $transport == tcp ]] && mca=(--mca pml ob1 --mca btl self,tcp --mca btl_tcp_if_include lo)
  [[ $BIND == core ]] && mca+=(--map-by core --bind-to core:overload-allowed)
  OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
    timeout -k 10 "$tmo" mpirun.openmpi -n "$n" --oversubscribe "${mca[@]}" \
    "$PEER_BIN/mpi_coll_bench.openmpi" "openmpi-$transport" "$coll" "$size" "$warm" "$iters" "$secs"
}

# MPICH picks shared memory between ranks of one host by itself. It busy-polls without yielding,
# so past 2 ranks on 2 cores it crawls; the time cap in the benchmark and the timeout bound it.
run_mpich() {
  local coll=$1 n=$2 size=$3 warm=$4 iters=$5 secs=$6 tmo=$7 bind=()
  [[ $BIND == core ]] && bind=(-bind-to core)
  timeout -k 10 "$tmo" mpirun.mpich -n "$n" "${bind[@]}" \
    "$PEER_BIN/mpi_coll_bench.mpich" mpich "$coll" "$size" "$warm" "$iters" "$secs"
}

# The CPUs this script may run on, one per word (as bcclrun --bind core counts them).
allowed_cpus() {
  local list part parts a b out=()
  list=$(sed -n 's/^Cpus_allowed_list:[[:space:]]*//p' /proc/self/status)
  IFS=, read -ra parts <<<"$list"
  for part in "${parts[@]}"; do
    a=${part%-*} b=${part#*-}
    for ((; a <= b; a++)); do out+=("$a"); done
  done
  echo "${out[*]}"
}

# Rank r's CPU among GLOO_CPUS, round robin.
cpu_of_rank() {
  local list
  read -ra list <<<"$GLOO_CPUS"
  echo "${list[$(($1 % ${#list[@]}))]}"
}

# Gloo has no launcher: one process per rank, meeting in a FileStore directory of this run's.
# When a rank fails the others would wait for it until Gloo's own timeout: stop them at once.
gloo_ranks() {
  local n=$1 store=$2 pids=() r rc=0 pin=()
  shift 2
  for ((r = 0; r < n; r++)); do
    [[ -n $GLOO_CPUS ]] && pin=(taskset -c "$(cpu_of_rank "$r")")
    "${pin[@]}" "$PEER_BIN/gloo_coll_bench" "$r" "$n" "$store" "$@" &
    pids+=($!)
  done
  for ((r = 0; r < n; r++)); do
    wait -n || { rc=$?; kill "${pids[@]}" 2>/dev/null || true; break; }
  done
  wait
  return "$rc"
}

run_gloo() {
  local coll=$1 n=$2 size=$3 warm=$4 iters=$5 secs=$6 tmo=$7 store rc=0
  store="$(mktemp -d)"
  local cpus=""
  [[ $BIND == core ]] && cpus=$(allowed_cpus)
  timeout -k 10 "$tmo" bash -c "PEER_BIN='$PEER_BIN' GLOO_CPUS='$cpus'; $(declare -f gloo_ranks cpu_of_rank); gloo_ranks \"\$@\"" \
    _ "$n" "$store" "$coll" "$size" "$warm" "$iters" "$secs" || rc=$?
  rm -rf "$store"
  return "$rc"
}

# ---- one run -----------------------------------------------------------------------------------

declare -A R_STATUS R_TIME R_BUSBW R_WRONG R_XCORE EST_S FAILED_AT
RUN_NO=0
RUN_TOTAL=0
XCORE_ALL=()  # every probe's handoff rate, GB/s

field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"; }

# Whether number A beats number B for a cell of SIZE: a lower time at 8 B, a higher busbw above.
beats() {
  awk -v a="$2" -v b="$3" -v lat=$(($1 == 8)) 'BEGIN { exit !(lat ? a < b : a > b) }'
}

# The number a result line counts by: its time at 8 B, its busbw above.
figure() {
  if (($1 == 8)); then field time_us "$2"; else field busbw "$2"; fi
}

# The number a recorded cell counts by.
cell_figure() {
  if ((${1##*|} == 8)); then echo "${R_TIME[$1]}"; else echo "${R_BUSBW[$1]}"; fi
}

record() {  # record KEY STATUS [RESULT-line]; also appends the line to the results file
  local key=$1 status=$2 line=${3:-} lib coll n size old
  IFS='|' read -r lib coll n size <<<"$key"
  if [[ -n $line ]]; then
    echo "$line status=$status" >>"$OUT"
  else
    echo "RESULT lib=$lib coll=$coll nranks=$n req=$size status=$status" >>"$OUT"
  fi
  # Over rounds: a wrong round marks the cell WRONG for good, else the best correct round
  # counts; a round without a number replaces only a cell that has none either.
  old=${R_STATUS[$key]:-}
  [[ $old == WRONG ]] && return
  if [[ $old == OK && $status != WRONG ]]; then
    [[ $status == OK ]] && beats "$size" "$(figure "$size" "$line")" "$(cell_figure "$key")" ||
      return 0
  fi
  R_STATUS[$key]=$status
  if [[ -n $line ]]; then
    R_TIME[$key]=$(field time_us "$line")
    R_BUSBW[$key]=$(field busbw "$line")
    R_WRONG[$key]=$(field wrong "$line")
    R_XCORE[$key]=$(field xcore "$line")
  fi
}

# How fast one CPU hands data to the other right now (xcore.c), GB/s; empty if it failed.
probe_xcore() {
  local line
  line=$(timeout -k 2 30 "$PEER_BIN/xcore" 256 2>/dev/null || true)
  field handoff_GBps "$line"
}

run_one() {
  local lib=$1 coll=$2 n=$3 size=$4 round=$5
  local key="$lib|$coll|$n|$size" est_key="$lib|$n|$size" warm iters secs tmo
  read -r warm iters secs tmo <<<"$(plan_for "$size")"
  RUN_NO=$((RUN_NO + 1))
  local tag
  tag=$(printf '[%3d/%d] %-13s n=%d %5s r%d %-11s' "$RUN_NO" "$RUN_TOTAL" "$coll" "$n" \
    "$(human_size "$size")" "$round" "$lib")

  # A library that timed out at a smaller size of this cell's row would only time out again.
  if [[ -n ${FAILED_AT["$lib|$coll|$n"]:-} ]]; then
    record "$key" "SKIP-after-${FAILED_AT["$lib|$coll|$n"]}"
    log "$tag skipped: ${FAILED_AT["$lib|$coll|$n"]} at a smaller size"
    return
  fi
  # Every rank holds a few size-sized buffers (ours: send, recv, in-place, expected): 5x is ample.
  local need_kb=$((n * size * 5 / 1024)) avail_kb
  avail_kb=$(awk '/MemAvailable/ { print $2 }' /proc/meminfo)
  if ((need_kb > avail_kb * 8 / 10)); then
    record "$key" SKIP-memory
    log "$tag skipped: needs ~$((need_kb / 1048576)) GiB, $((avail_kb / 1048576)) GiB available"
    return
  fi
  local now_us=${EPOCHREALTIME/./} est=${EST_S[$est_key]:-$(default_estimate_s "$size")}
  local left_s=$(((DEADLINE_US - now_us) / 1000000))
  if ((est > left_s)); then
    record "$key" SKIP-budget
    log "$tag skipped: needs ~${est}s, ${left_s}s of the budget left"
    return
  fi
  ((tmo <= left_s + 30)) || tmo=$((left_s + 30))

  local xcore
  xcore=$(probe_xcore)
  [[ -z $xcore ]] || XCORE_ALL+=("$xcore")

  # stdout (rank 0's RESULT line) apart from stderr, where other ranks' messages may land mid-line.
  local logf errf rc=0
  logf="$(mktemp)"
  errf="$(mktemp)"
  case $lib in
    ours-shm) run_ours shm "$coll" "$n" "$size" "$warm" "$iters" "$tmo" >"$logf" 2>"$errf" || rc=$? ;;
    ours-tcp) run_ours tcp "$coll" "$n" "$size" "$warm" "$iters" "$tmo" >"$logf" 2>"$errf" || rc=$? ;;
    openmpi-shm) run_openmpi shm "$coll" "$n" "$size" "$warm" "$iters" "$secs" "$tmo" >"$logf" 2>"$errf" || rc=$? ;;
    openmpi-tcp) run_openmpi tcp "$coll" "$n" "$size" "$warm" "$iters" "$secs" "$tmo" >"$logf" 2>"$errf" || rc=$? ;;
    mpich) run_mpich "$coll" "$n" "$size" "$warm" "$iters" "$secs" "$tmo" >"$logf" 2>"$errf" || rc=$? ;;
    gloo-tcp) run_gloo "$coll" "$n" "$size" "$warm" "$iters" "$secs" "$tmo" >"$logf" 2>"$errf" || rc=$? ;;
  esac
  local took_ms=$(((${EPOCHREALTIME/./} - now_us) / 1000)) took
  took=$(printf '%d.%ds' $((took_ms / 1000)) $((took_ms % 1000 / 100)))
  EST_S[$est_key]=$((took_ms / 1000 + 1))

  local line status
  line=$(grep -m1 '^RESULT ' "$logf" || true)
  [[ -z $line ]] || line+=" round=$round xcore=${xcore:-n/a}"
  # The benchmarks name their wrong elements on stderr ("# rank ..."); keep them in the results.
  grep 'wrong' "$errf" | head -20 | sed 's/^/#   /' >>"$OUT" || true
  if ((rc == 124 || rc == 137)); then
    status=TIMEOUT
    FAILED_AT["$lib|$coll|$n"]="TIMEOUT"
  elif [[ -z $line ]]; then
    status="FAIL-rc$rc"
    FAILED_AT["$lib|$coll|$n"]="FAIL"
    tail -5 "$errf" | sed 's/^/#   /' >>"$OUT"
  elif [[ $(field wrong "$line") != 0 ]]; then
    status=WRONG
  else
    status=OK
  fi
  record "$key" "$status" "$line"
  if [[ $status == OK || $status == WRONG ]]; then
    log "$tag $(field time_us "$line") us  $(field busbw "$line") GB/s  ($took, xcore ${xcore:-n/a} GB/s) $status"
  else
    log "$tag $status ($took, timeout ${tmo}s)"
    [[ $status == TIMEOUT ]] || tail -3 "$errf" | sed 's/^/    /' >&2
  fi
  rm -f "$logf" "$errf"
}

# ---- memory bandwidth: the ceiling for large shm collectives -----------------------------------

MEMBW_T1="" MEMBW_T2=""
measure_membw() {
  local t line
  for t in 1 2; do
    line=$(timeout -k 5 60 "$PEER_BIN/membw" "$t" 256 4 || true)
    [[ -n $line ]] || { log "membw $t thread(s) failed"; continue; }
    echo "$line" >>"$OUT"
    log "memcpy 256 MiB x $t thread(s): $(field copy_GBps "$line") GB/s copied"
    if ((t == 1)); then MEMBW_T1=$line; else MEMBW_T2=$line; fi
  done
}

# The bound for ours at 2 ranks, 256 MiB, shm allreduce. With n = 2 and S bytes per rank,
# busbw = algbw * 2(n-1)/n = S / t. An allreduce that reads each rank's input once (its own and,
# through shared memory, its peer's: 2S reads in all), reduces in registers and writes each
# rank's result once (2S writes) moves 4S bytes of memory traffic per call, both cores together.
# What the machine can move is memcpy's traffic (reads + writes, 2x the bytes copied), the better
# of 1 and 2 threads (on a loaded machine 2 threads can do worse): t >= 4S / traffic, so
# busbw <= traffic / 4, i.e. 4 bytes of traffic per byte of busbw. It is optimistic: large
# memcpy's use non-temporal stores, while a reduction that writes through the cache also reads
# every output line first (write-allocate: 6S per call), and a staging copy through a bounce
# buffer adds 2S per copy.
# The issue's own derivation (the bar's wording) counts one more pass: both inputs read (2S),
# the result reduced in place into one shared buffer (S written), then copied out by the other
# rank (S read, S written): 5S, so busbw <= traffic / 5. Both bounds are printed; the tighter
# one (traffic / 4) is the one no allreduce can beat.
membw_bound_line() {
  local key="ours-shm|allreduce|2|268435456" t1 t2
  t1=$(field traffic_GBps "$MEMBW_T1")
  t2=$(field traffic_GBps "$MEMBW_T2")
  if [[ -z $t1$t2 ]]; then
    echo "memory-bandwidth bound: n/a (membw did not run)"
    return
  fi
  awk -v t1="${t1:-0}" -v t2="${t2:-0}" -v o="${R_BUSBW[$key]:-}" -v st="${R_STATUS[$key]:-}" 'BEGIN {
    threads = (t1 > t2) ? 1 : 2
    t = (t1 > t2) ? t1 : t2
    printf "bound for a 2-rank shm allreduce: busbw <= traffic/4 = %.2f GB/s (traffic %.2f GB/s, %d thread(s))", t / 4, t, threads
    if (st == "OK" && o != "") printf "; ours at 256 MiB: %.2f GB/s = %.2f of the bound\n", o, o / (t / 4)
    else printf "; ours at 256 MiB: not measured (%s)\n", st == "" ? "not in this run" : st
    printf "  the issue'"'"'s derivation (reduce in place once, copy out: 5 bytes of traffic per byte): busbw <= traffic/5 = %.2f GB/s", t / 5
    if (st == "OK" && o != "") printf "; ours = %.2f of it\n", o / (t / 5)
    else printf "\n"
  }'
}

# ---- the table ---------------------------------------------------------------------------------

# A cell: latency (us) at 8 B, busbw (GB/s) above; a run that did not give a trusted number says
# why instead.
cell() {
  local key=$1 size=$2 st=${R_STATUS[$1]:-}
  case $st in
    OK) awk -v v="$(cell_figure "$key")" -v lat=$((size == 8)) -v x="${R_XCORE[$key]:-}" \
          -v slow="$XCORE_SLOW_BELOW" 'BEGIN {
            printf(lat ? (v >= 100 ? "%.0f" : "%.2f") : (v >= 0.1 ? "%.2f" : "%.3f"), v)
            printf("%s\n", (x ~ /^[0-9.]+$/ && x < slow) ? "*" : "") }' ;;
    WRONG) echo "WRONG(${R_WRONG[$key]})" ;;
    TIMEOUT) echo "timeout" ;;
    SKIP-budget) echo "skip:budget" ;;
    SKIP-memory) echo "skip:mem" ;;
    SKIP-after-*) echo "skip:t/o" ;;
    FAIL*) echo "fail" ;;
    *) echo "-" ;;
  esac
}

# A run whose probe read below this (half the run's best handoff rate) ran in the slow placement
# (0: no probe worked, nothing counts as slow). Set by print_table before the cells use it.
XCORE_SLOW_BELOW=0

# One line on the cross-core handoff rates the runs saw.
xcore_line() {
  ((${#XCORE_ALL[@]} > 0)) || { echo "cross-core handoff: not measured (xcore failed)"; return; }
  printf '%s\n' "${XCORE_ALL[@]}" | sort -g | awk -v slow="$XCORE_SLOW_BELOW" '{ v[NR] = $1 } END {
    n = 0
    for (i = 1; i <= NR; ++i) if (v[i] < slow) ++n
    printf "cross-core handoff before each run (xcore, GB/s): min %.2f, median %.2f, best %.2f; ", v[1], v[int((NR + 1) / 2)], v[NR]
    printf "%d of %d runs saw less than half the best (their numbers, when they count, are marked *)\n", n, NR }'
}

# Ours against the best peer that gave a correct number: how many times better ours is (>1: ours
# wins); the peer's time over ours at 8 B, our busbw over the peer's above.
ratio() {
  local ours=$1 coll=$2 n=$3 size=$4
  shift 4
  local okey="$ours|$coll|$n|$size" best="" best_lib="" p v
  [[ ${R_STATUS[$okey]:-} == OK || ${R_STATUS[$okey]:-} == WRONG ]] || { echo "-"; return; }
  for p; do
    [[ ${R_STATUS["$p|$coll|$n|$size"]:-} == OK ]] || continue
    v=$(cell_figure "$p|$coll|$n|$size")
    if [[ -z $best ]] || beats "$size" "$v" "$best"; then
      best=$v best_lib=$p
    fi
  done
  [[ -n $best ]] || { echo "no peer"; return; }
  local mine
  mine=$(cell_figure "$okey")
  awk -v m="$mine" -v b="$best" -v lat=$((size == 8)) -v p="$best_lib" -v w="${R_STATUS[$okey]}" \
    'BEGIN { r = lat ? (m > 0 ? b / m : 0) : (b > 0 ? m / b : 0)
             printf "%.2f %s%s", r, p, (w == "WRONG" ? " (ours WRONG)" : "") }'
}

print_table() {
  local coll n size lib row
  XCORE_SLOW_BELOW=$(printf '%s\n' "${XCORE_ALL[@]:-0}" | sort -g | tail -1 | awk '{ print $1 / 2 }')
  echo "bccl vs peers: latency in us at 8 B, busbw in GB/s above (nccl-tests definitions)."
  echo "ratio = ours vs the best correct peer, >1 means ours is better (time: peer/ours; busbw: ours/peer)."
  echo "shm ratio: ours-shm vs ${SHM_PEERS[*]}; tcp ratio: ours-tcp vs ${TCP_PEERS[*]}."
  row=$(printf '%-13s %2s %5s' coll n size)
  for lib in "${LIBS[@]}"; do row+=$(printf ' %12s' "$lib"); done
  row+=$(printf '  %-22s %-22s' "shm ratio (best peer)" "tcp ratio (best peer)")
  echo "$row"
  for coll in "${COLLS[@]}"; do
    for n in "${NRANKS_LIST[@]}"; do
      for size in "${SIZES[@]}"; do
        row=$(printf '%-13s %2d %5s' "$coll" "$n" "$(human_size "$size")")
        for lib in "${LIBS[@]}"; do row+=$(printf ' %12s' "$(cell "$lib|$coll|$n|$size" "$size")"); done
        row+=$(printf '  %-22s %-22s' "$(ratio ours-shm "$coll" "$n" "$size" "${SHM_PEERS[@]}")" \
          "$(ratio ours-tcp "$coll" "$n" "$size" "${TCP_PEERS[@]}")")
        echo "$row"
      done
    done
  done
  echo
  [[ -n $MEMBW_T1 ]] && echo "memcpy 256 MiB, 1 thread: $(field copy_GBps "$MEMBW_T1") GB/s copied, $(field traffic_GBps "$MEMBW_T1") GB/s traffic"
  [[ -n $MEMBW_T2 ]] && echo "memcpy 256 MiB, 2 threads: $(field copy_GBps "$MEMBW_T2") GB/s copied, $(field traffic_GBps "$MEMBW_T2") GB/s traffic"
  membw_bound_line
  xcore_line
  echo "each library's best of $ROUNDS round(s) per cell, libraries alternating within each round."
  local skipped=0 k
  for k in "${!R_STATUS[@]}"; do [[ ${R_STATUS[$k]} == SKIP-budget ]] && skipped=$((skipped + 1)); done
  ((skipped == 0)) || echo "$skipped run(s) did not fit the ${BUDGET_MIN}-minute budget (skip:budget); rerun with a larger --budget-minutes."
  echo "WRONG(k): k elements wrong over all ranks, never counted as a peer's best; timeout: killed after its limit; skip:t/o: an earlier size of the row timed out or failed."
}

# ---- main --------------------------------------------------------------------------------------

main() {
  parse_args "$@"
  ensure_packages
  build_bccl
  build_peers
  configure_plan
  mkdir -p "$(dirname "$OUT")"
  {
    echo "# compare_peers.sh $(date -Is) on $(hostname), $(nproc) cores, bccl tools in $BUILD (tree at $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), build=$BUILD_BCCL)"
    echo "# budget ${BUDGET_MIN} min, quick=$QUICK, ranks bound: $BIND, load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  } >"$OUT"
  RUN_TOTAL=$((${#NRANKS_LIST[@]} * ${#COLLS[@]} * ${#SIZES[@]} * ${#LIBS[@]} * ROUNDS))
  measure_membw
  local n coll size lib round
  for n in "${NRANKS_LIST[@]}"; do
    for coll in "${COLLS[@]}"; do
      for size in "${SIZES[@]}"; do
        for ((round = 1; round <= ROUNDS; ++round)); do
          for lib in "${LIBS[@]}"; do run_one "$lib" "$coll" "$n" "$size" "$round"; done
        done
      done
    done
  done
  echo "# load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT"
  echo >>"$OUT"
  print_table | tee -a "$OUT"
  echo
  echo "results: $OUT"
}

# Sourcing the file (for trying one function) runs nothing.
[[ ${BASH_SOURCE[0]} != "$0" ]] || main "$@"
