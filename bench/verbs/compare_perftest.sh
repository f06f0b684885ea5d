#!/usr/bin/env bash
# compare_perftest.sh BUILD_DIR [OUT_DIR]: bccl over verbs against perftest on the same RDMA
# device, in one soft-RoCE VM boot (tests/verbs/softroce_vm.sh), and the issue's two bars:
#   busbw of all_reduce_perf at 16 MiB >= 80% of ib_write_bw's bandwidth, and
#   8-byte all_reduce latency <= 2x ib_send_lat's round trip (2 x its typical one-way time).
# ib_send_lat's "typical" is the median of its per-iteration times, so ours is the median of
# per-call times too (all_reduce_perf -P 1); the means (ours against its t_avg) are printed
# beside it.
# Measured, in this order: ib_write_bw (64 KiB writes; also with -b, both directions at once,
# which is what a 2-rank allreduce does: printed beside the bar, not in place of it) and
# ib_send_lat (8 B) between two
# processes on rxe0, then all_reduce_perf and all_gather_perf for 2 ranks over verbs from 8 B
# to 16 MiB (small sizes with many iterations, large ones with few: emulated RDMA moves tens
# of MB/s), then the numbers behind the bars again COMPARE_REPS times (default 3), perftest and
# ours back to back, reporting the best sample of each (and medians). Raw outputs and
# summary.txt go to OUT_DIR (default BUILD_DIR/verbs-perf).
# Under TCG emulation these are functional numbers, not hardware ones; the ratios are the point.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

if [ "${1:-}" != --inside ]; then
  build=$(cd "${1:?usage: compare_perftest.sh BUILD_DIR [OUT_DIR]}" && pwd)
  out=${2:-$build/verbs-perf}
  mkdir -p "$out" && out=$(cd "$out" && pwd)
  for exe in all_reduce_perf all_gather_perf bcclrun; do
    [ -x "$build/$exe" ] || { echo "missing $build/$exe: build it first" >&2; exit 1; }
  done
  command -v ib_write_bw >/dev/null || { echo "compare_perftest: SKIP: perftest is not installed"; exit 77; }
  cd "$out" || exit 1
  exec "$root/tests/verbs/softroce_vm.sh" --timeout "${SOFTROCE_VM_TIMEOUT:-1800}" -- \
    bash "$here/compare_perftest.sh" --inside "$build" "$out"
fi

# ---- inside the VM ----------------------------------------------------------------------------
build=$2 out=$3
dev=${SOFTROCE_DEV:?not in the soft-RoCE VM} gid=${SOFTROCE_GID_INDEX:?} ip=${SOFTROCE_IP:?}
cd "$out" || exit 1
pt=(-d "$dev" -x "$gid" -F)

# perftest: a server in the background, the client retried until the server listens.
perftest() {  # name tool args...
  local name=$1 tool=$2 i
  shift 2
  "$tool" "${pt[@]}" "$@" > "$name.server.txt" 2>&1 &
  local spid=$!
  for i in 1 2 3 4 5 6 7 8 9 10; do
    sleep 0.5
    if "$tool" "${pt[@]}" "$@" "$ip" > "$name.txt" 2>&1; then break; fi
  done
  wait "$spid"
}
export BCCL_TRANSPORT=verbs
ours() {  # name tool args...
  local name=$1 tool=$2
  shift 2
  "$build/bcclrun" -n 2 "$build/$tool" "$@" > "$name.txt" 2>&1 || echo "$name failed (see $out/$name.txt)"
}
# Rank 0's rows: "[0] size count type redop root time algbw busbw #wrong ..." (out-of-place).
col() { sed -n 's/^\[0\] *//p' "$1" | awk -v s="$2" -v c="$3" '$1 == s {print $c}' | head -n1; }
# The median of rank 0's out-of-place per-call line (-P 1) for size $2.
p50() {
  awk -v s="$2" '/^\[0\] # per-call / && $4 == s && $5 == "out-of-place" {
    for (i = 1; i < NF; ++i) if ($i == "p50") { print $(i + 1); exit } }' "$1"
}
# busbw from the time column: the printed GB/s has two decimals, too coarse at these speeds.
# Bus factors for 2 ranks (nccl-tests): allreduce 2(n-1)/n = 1, allgather (n-1)/n = 1/2.
busbw() { awk -v t="$1" -v s=16777216 -v f="$2" 'BEGIN { if (t > 0) printf "%.4f", s / 1e3 / t * f }'; }
median() { sort -g | awk '{v[NR] = $1} END {if (NR) print v[int((NR + 1) / 2)]}'; }
lowest() { sort -g | head -n1; }
highest() { sort -g | tail -n1; }

# The sweeps, once (the tables in the raw files). Blocking calls (-z 1): the caller runs the
# collective, as a latency measurement should.
ours allreduce_small all_reduce_perf -b 8 -e 65536 -f 2 -w 20 -n 200 -z 1
ours allreduce_large all_reduce_perf -b 131072 -e 16777216 -f 2 -w 1 -n 4 -z 1
ours allgather_small all_gather_perf -b 8 -e 65536 -f 2 -w 20 -n 200 -z 1
ours allgather_large all_gather_perf -b 131072 -e 16777216 -f 2 -w 1 -n 4 -z 1

# The bars' numbers, each pair measured back to back and repeated: the VM shares the host's
# cores, so one sample alone says more about the neighbours than about the transport.
reps=${COMPARE_REPS:-3}
# rxe's retransmission-timer retries, device-wide: in a slow guest rxe retries spuriously (for
# perftest and for us alike), and a rep with many of them is slow for that reason alone.
retries() { cat "/sys/class/infiniband/$dev/ports/1/hw_counters/completer_retry_err" 2>/dev/null || echo 0; }
: > samples.txt
for rep in $(seq "$reps"); do
  r0=$(retries)
  perftest write_bw.$rep ib_write_bw --report_gbits -s 65536 -n 1000
  r1=$(retries)
  # Both directions at once, as a 2-rank allreduce streams: perftest prints their sum.
  perftest write_bw_bidir.$rep ib_write_bw --report_gbits -s 65536 -n 1000 -b
  r2=$(retries)
  ours ar16m.$rep all_reduce_perf -b 16777216 -e 16777216 -w 1 -n 3 -z 1
  r3=$(retries)
  ours ag16m.$rep all_gather_perf -b 16777216 -e 16777216 -w 1 -n 3 -z 1
  perftest send_lat.$rep ib_send_lat -s 8 -n 2000
  ours ar8.$rep all_reduce_perf -b 8 -e 8 -w 50 -n 1000 -z 1 -P 1
  # The library's own per-call cost in this VM, without any network: the floor under ar8.
  BCCL_TRANSPORT=shm ours ar8shm.$rep all_reduce_perf -b 8 -e 8 -w 50 -n 1000 -z 1
  # "#bytes #iterations BW peak[Gb/sec] BW average[Gb/sec] MsgRate[Mpps]"
  wb=$(awk '$1 == 65536 && NF >= 4 {print $4}' write_bw.$rep.txt | tail -n1)
  wbb=$(awk '$1 == 65536 && NF >= 4 {printf "%.3f\n", $4 / 2}' write_bw_bidir.$rep.txt | tail -n1)
  # "#bytes #iterations t_min t_max t_typical t_avg ..." (one-way times, us)
  lt=$(awk '$1 == 8 && NF >= 6 {print $5, $6}' send_lat.$rep.txt | tail -n1)
  echo "rep $rep write_gbps ${wb:-?} bidir_gbps_per_direction ${wbb:-?} ar16_busbw $(busbw "$(col ar16m.$rep.txt 16777216 6)" 1)" \
       "ag16_busbw $(busbw "$(col ag16m.$rep.txt 16777216 6)" 0.5) send_lat_typ_avg ${lt:-? ?}" \
       "ar8_us $(col ar8.$rep.txt 8 6) ar8_p50_us $(p50 ar8.$rep.txt 8) ar8_shm_us $(col ar8shm.$rep.txt 8 6)" \
       "retries_write_bw $((r1 - r0)) retries_ar16 $((r3 - r2))" >> samples.txt
done
# The VM shares the host's two cores with whatever else runs there, and interference only ever
# makes a sample slower: the bars use each side's best sample (highest bandwidth, lowest time),
# medians are printed beside them.
values() { awk -v k="$1" -v o="${2:-1}" '{for (i = 1; i < NF; ++i) if ($i == k) print $(i + o)}' samples.txt; }
write_gbps=$(values write_gbps | highest) ar_bus=$(values ar16_busbw | highest)
bidir_gbps=$(values bidir_gbps_per_direction | highest)
ag_bus=$(values ag16_busbw | highest) lat_typ=$(values send_lat_typ_avg | lowest)
lat_avg=$(values send_lat_typ_avg 2 | lowest) ar_lat=$(values ar8_us | lowest)
ar_p50=$(values ar8_p50_us | lowest)
shm_lat=$(values ar8_shm_us | lowest)
medians="write_gbps $(values write_gbps | median), ar16_busbw $(values ar16_busbw | median),"
medians+=" ag16_busbw $(values ag16_busbw | median), send_lat_typ $(values send_lat_typ_avg | median),"
medians+=" ar8_us $(values ar8_us | median), ar8_p50_us $(values ar8_p50_us | median),"
medians+=" ar8_shm_us $(values ar8_shm_us | median), send_lat_avg $(values send_lat_typ_avg 2 | median)"
# Each rep's own ratios (its perftest and ours ran back to back, so drift over the boot cancels):
# allreduce busbw / ib_write_bw, and 8 B allreduce median / ib_send_lat round trip (typical).
rep_ratios() {
  awk '{for (i = 1; i < NF; ++i) v[$i] = $(i + 1)
        if ($1 == "rep" && v["write_gbps"] > 0 && v["send_lat_typ_avg"] > 0)
          printf "%.3f %.3f\n", v["ar16_busbw"] / (v["write_gbps"] / 8), v["ar8_p50_us"] / (2 * v["send_lat_typ_avg"])}' samples.txt
}
ratios=$(rep_ratios)
bw_ratio_median=$(awk '{print $1}' <<<"$ratios" | median)
lat_ratio_median=$(awk '{print $2}' <<<"$ratios" | median)
{
  echo "# bccl over verbs vs perftest on $dev (GID $gid), one VM boot, $(date -u +%F), best of $reps"
  grep -h '^\[0\] # Transport' allreduce_large.txt | sed 's/^\[0\] //'
  cat samples.txt
  echo "medians: $medians"
  echo "per-rep ratios (bandwidth, latency): $(tr '\n' ' ' <<<"$ratios")"
  echo "medians of the per-rep ratios: bandwidth ${bw_ratio_median:-?} (bar >= 0.80), latency ${lat_ratio_median:-?} (bar <= 2)"
  printf 'ib_write_bw 64 KiB        : %s Gb/s = %s GB/s\n' "${write_gbps:-?}" \
    "$(awk -v g="${write_gbps:-0}" 'BEGIN{printf "%.4f", g/8}')"
  printf 'ib_write_bw -b 64 KiB     : %s Gb/s per direction = %s GB/s (both directions at once)\n' \
    "${bidir_gbps:-?}" "$(awk -v g="${bidir_gbps:-0}" 'BEGIN{printf "%.4f", g/8}')"
  printf 'ib_send_lat 8 B one-way   : typical %s us, avg %s us (round trip: %s us)\n' \
    "${lat_typ:-?}" "${lat_avg:-?}" "$(awk -v t="${lat_typ:-0}" 'BEGIN{printf "%.2f", 2*t}')"
  printf 'all_reduce 16 MiB busbw   : %s GB/s\n' "${ar_bus:-?}"
  printf 'all_gather 16 MiB busbw   : %s GB/s\n' "${ag_bus:-?}"
  printf 'all_reduce 8 B time       : median %s us, mean %s us (over shm in the same VM: mean %s us)\n' \
    "${ar_p50:-?}" "${ar_lat:-?}" "${shm_lat:-?}"
  awk -v bus="${ar_bus:-0}" -v ag="${ag_bus:-0}" -v g="${write_gbps:-0}" -v lat="${ar_lat:-0}" \
      -v typ="${lat_typ:-0}" -v avg="${lat_avg:-0}" -v gb="${bidir_gbps:-0}" \
      -v p50="${ar_p50:-0}" 'BEGIN {
    wb = g / 8; wbb = gb / 8
    r1 = 0; r2 = 0; r3 = 0; r4 = 0
    if (wb > 0) { r1 = bus / wb; r2 = ag / wb }
    if (typ > 0) r3 = p50 / (2 * typ)
    if (avg > 0) r4 = lat / (2 * avg)
    m1 = "NOT MET"; if (r1 >= 0.8) m1 = "MET"
    m3 = "NOT MET"; if (r3 > 0 && r3 <= 2) m3 = "MET"
    printf("bar 1: all_reduce busbw / ib_write_bw = %.2f (want >= 0.80): %s\n", r1, m1)
    printf("       all_gather busbw / ib_write_bw = %.2f\n", r2)
    if (wbb > 0)
      printf("       all_reduce busbw / ib_write_bw -b per direction = %.2f (like for like: both stream both ways)\n", bus / wbb)
    printf("bar 2: 8 B all_reduce median / ib_send_lat round trip (2 x typical, its median) = %.2f (want <= 2): %s\n", r3, m3)
    printf("       mean against mean: all_reduce mean / (2 x ib_send_lat t_avg) = %.2f\n", r4)
    if (typ > 0) printf("       mean against typical (this script before 2026-12-07 s5) = %.2f\n", lat / (2 * typ))
  }'
} | tee summary.txt
