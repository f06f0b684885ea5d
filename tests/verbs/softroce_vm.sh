#!/usr/bin/env bash
# softroce_vm.sh [--timeout SECS] [--mem SIZE] [--cpus N] -- COMMAND [ARGS...]
#
# Runs COMMAND inside a throw-away qemu VM whose kernel has a soft-RoCE device, rxe0, so the
# verbs transport can be tested where the host kernel has no RDMA (containers, CI runners).
# Adapted for bccl from ../shared/softroce/run-in-softroce-vm.sh (same approach, trimmed to
# what the project's tests need): the guest boots Debian's kernel with a busybox initramfs,
# mounts the host's root read-only over virtio-9p with a tmpfs overlay (so host-built binaries
# and host-installed libibverbs/librxe run unchanged), shares the current directory read-write,
# creates veth0/veth1 with rxe0 on veth0 and veth2/veth3 with rxe1 on veth2, and runs COMMAND as the caller in the current
# directory with the caller's exported environment, RLIMIT_MEMLOCK unlimited and
# /dev/infiniband world-accessible. Exported to COMMAND: SOFTROCE_DEV=rxe0, SOFTROCE_IP,
# SOFTROCE_GID_INDEX (the IPv4-mapped RoCE v2 GID), SOFTROCE_DEV2=rxe1, SOFTROCE_NETDEV2=veth2.
#
# Exit status: COMMAND's; 124 on timeout; 125 when the VM failed before COMMAND reported;
# 77 when this machine cannot run the VM at all (the reason is printed).
# Host packages: qemu-system-x86 linux-image-amd64 busybox-static cpio kmod (scripts/install-deps.sh).
# KVM is used when /dev/kvm is usable and the CPU has vmx/svm, else TCG (pure emulation: slow).
set -euo pipefail
prog=${0##*/}
skip() { echo "$prog: SKIP: $*" >&2; exit 77; }
die() { echo "$prog: error: $*" >&2; exit 125; }
log() { echo "$prog: $*" >&2; }

mem=2G cpus=2 timeout_s=0
while [ $# -gt 0 ]; do
  case $1 in
    --mem) mem=$2; shift 2 ;;
    --cpus) cpus=$2; shift 2 ;;
    --timeout) timeout_s=$2; shift 2 ;;
    --) shift; break ;;
    *) die "unknown option '$1'" ;;
  esac
done
[ $# -gt 0 ] || die "no COMMAND"

# ---- can this machine run it? ------------------------------------------------------------------
for t in qemu-system-x86_64 cpio gzip modinfo; do
  command -v "$t" >/dev/null || skip "'$t' not found (apt-get install qemu-system-x86 cpio kmod)"
done
busybox=""
for b in /bin/busybox /usr/bin/busybox; do
  if [ -x "$b" ] && ! ldd "$b" >/dev/null 2>&1; then busybox=$b; break; fi
done
[ -n "$busybox" ] || skip "no static busybox (apt-get install busybox-static)"
kernel=$(ls -1 /boot/vmlinuz-* 2>/dev/null | sort -V | tail -n1 || true)
[ -n "$kernel" ] && [ -r "$kernel" ] || skip "no readable /boot/vmlinuz-* (apt-get install linux-image-amd64)"
kver=${kernel##*/vmlinuz-}
[ -d "/lib/modules/$kver" ] || skip "no modules for guest kernel $kver in /lib/modules"
modinfo -k "$kver" rdma_rxe >/dev/null 2>&1 || skip "kernel $kver has no rdma_rxe module"
ls /usr/lib/*/libibverbs/librxe-rdmav*.so >/dev/null 2>&1 ||
  skip "no rxe provider for libibverbs (apt-get install ibverbs-providers)"

# Without ERMS/FSRM: the guest kernel (rxe's payload copies, copy_to_user) and glibc then copy with
# instructions TCG translates well; TCG runs `rep movsb` byte by byte, at 0.5 GB/s against 3.6
# for the same copy otherwise, and with it rxe moved ~1.6x less, perftest and bccl alike
# (docs/measurements/copy-under-tcg-20261208.txt).
accel=(-accel tcg,thread=multi -cpu max,-erms,-fsrm)
if [ -r /dev/kvm ] && [ -w /dev/kvm ] && grep -qwE 'vmx|svm' /proc/cpuinfo; then
  accel=(-accel kvm -cpu host)
fi

# ---- initramfs: modules to mount 9p + overlay, an /init that pivots into the host root ---------
work=$(mktemp -d /tmp/bccl-softroce.XXXXXX)
qpid=""
cleanup() {
  if [ -n "$qpid" ] && kill -0 "$qpid" 2>/dev/null; then kill "$qpid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM HUP
ctl=$work/ctl ird=$work/initramfs
mkdir -p "$ctl" "$ird"/{bin,dev,proc,sys,tmp,newroot,lower,upper,ctl,modules}
cp "$busybox" "$ird/bin/busybox"
declare -A seen=()
order=()
addmod() {  # copies module $1 and its dependencies (first) into the initramfs, decompressed
  local m=$1 f d base
  [ -n "${seen[$m]:-}" ] && return 0
  seen[$m]=1
  f=$(modinfo -k "$kver" -n "$m" 2>/dev/null) || return 0
  case $f in /*) ;; *) return 0 ;; esac  # built in
  for d in $(modinfo -k "$kver" -F depends "$m" | tr ',' ' '); do addmod "$d"; done
  base=$(basename "$f"); base=${base%.xz}; base=${base%.zst}; base=${base%.gz}
  case $f in
    *.xz) xz -dc "$f" > "$ird/modules/$base" ;;
    *.zst) zstd -qdc "$f" > "$ird/modules/$base" ;;
    *.gz) gzip -dc "$f" > "$ird/modules/$base" ;;
    *) cp "$f" "$ird/modules/$base" ;;
  esac
  order+=("$base")
}
for m in virtio_pci virtio_pci_modern_dev 9pnet_virtio 9p overlay; do addmod "$m"; done
printf '%s\n' "${order[@]}" > "$ird/modules/order"

cwd=$(pwd -P)
export -p | grep -vE '^declare -x (BASH_[A-Z_]*|BASHOPTS|EUID|HOSTNAME|OLDPWD|PPID|PWD|SHELLOPTS|SHLVL|UID|_|TMPDIR|DISPLAY|SSH_[A-Z_]*)(=|$)' \
  > "$ctl/env" || true
printf '%q ' "$@" > "$ctl/cmd"
printf 'CWD=%q\nRUN_UID=%q\nRUN_GID=%q\n' "$cwd" "$(id -u)" "$(id -g)" > "$ctl/config"

cat > "$ird/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
off() { sync; poweroff -f; sleep 5; echo o > /proc/sysrq-trigger; }
while read -r m; do insmod "/modules/$m" 2>/dev/null; done < /modules/order
O="trans=virtio,version=9p2000.L,msize=262144"
mount -t 9p -o "$O,cache=none" ctl /ctl || off
. /ctl/config
mount -t 9p -o "$O,ro,cache=loose" hostroot /lower || { echo 125 > /ctl/status; off; }
mount -t tmpfs -o mode=755 tmpfs /upper && mkdir -p /upper/u /upper/w
mount -t overlay -o lowerdir=/lower,upperdir=/upper/u,workdir=/upper/w overlay /newroot ||
  { echo 125 > /ctl/status; off; }
mount -t proc proc /newroot/proc; mount -t sysfs sysfs /newroot/sys
mount -t devtmpfs devtmpfs /newroot/dev
mount -t tmpfs -o mode=1777 tmpfs /newroot/tmp
mount -t tmpfs -o mode=755 tmpfs /newroot/run
mkdir -p /newroot/run/vm "/newroot$CWD"
mount --move /ctl /newroot/run/vm
[ "$CWD" != / ] && mount -t 9p -o "$O,cache=mmap" cwd "/newroot$CWD"
# The kernel's module requests (rdma_rxe pulls in crc32 etc.) use the host's modprobe.
printf '#!/bin/sh\nexec chroot /newroot /sbin/modprobe "$@"\n' > /bin/modprobe-host
chmod 755 /bin/modprobe-host
echo /bin/modprobe-host > /proc/sys/kernel/modprobe
chroot /newroot /bin/bash /run/vm/guest.sh
[ -e /newroot/run/vm/status ] || echo $? > /newroot/run/vm/status
sync; umount -a -r 2>/dev/null; off
EOF
chmod 755 "$ird/init"

cat > "$ctl/guest.sh" <<'EOF'
#!/bin/bash
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
. /run/vm/config
fail() { echo "softroce-vm: setup failed: $*"; echo 125 > /run/vm/status; exit 125; }
stty -F /dev/console -onlcr 2>/dev/null
mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
ln -sf /proc/self/fd /dev/fd 2>/dev/null
hostname softroce-vm
ip link set lo up
for m in rdma_rxe ib_uverbs veth; do modprobe "$m" || fail "modprobe $m"; done
# veth, not lo: RoCE with the link-local GID fails on lo.
ip link add veth0 type veth peer name veth1 && ip addr add 10.77.0.1/24 dev veth0 &&
  ip addr add 10.77.0.2/24 dev veth1 && ip link set veth0 up && ip link set veth1 up ||
  fail "veth pair"
# A second device on a pair of its own: several devices per rank (BCCL_IB_HCA=rxe0,rxe1), one of
# which can lose its link (veth2) while rxe0 carries on (the ends of one pair go down together).
ip link add veth2 type veth peer name veth3 && ip addr add 10.77.1.1/24 dev veth2 &&
  ip addr add 10.77.1.2/24 dev veth3 && ip link set veth2 up && ip link set veth3 up ||
  fail "second veth pair"
rdma link add rxe0 type rxe netdev veth0 || fail "rdma link add rxe0"
rdma link add rxe1 type rxe netdev veth2 || fail "rdma link add rxe1"
chmod 666 /dev/infiniband/* 2>/dev/null
# Waits briefly for DEVICE's IPv4-mapped RoCE v2 GID and sets gidx to its index (builtins only:
# each fork costs ~0.1 s here).
wait_gid() {
  g=/sys/class/infiniband/$1/ports/1 gidx=""
  for _ in $(seq 50); do
    for n in 0 1 2 3; do
      read -r v < $g/gids/$n 2>/dev/null || continue
      t=""; read -r t < $g/gid_attrs/types/$n 2>/dev/null
      case $v in 0000:0000:0000:0000:0000:ffff:*) [ "$t" = "RoCE v2" ] && gidx=$n ;; esac
      [ -n "$gidx" ] && break
    done
    [ -n "$gidx" ] && break
    sleep 0.1
  done
  [ -n "$gidx" ] || fail "$1 has no IPv4 RoCE v2 GID"
}
wait_gid rxe1
wait_gid rxe0
echo "softroce-vm: $(rdma link | head -n1); GID $gidx $(cat $g/gids/$gidx)"
set -a; . /run/vm/env; set +a
export SOFTROCE_DEV=rxe0 SOFTROCE_IP=10.77.0.1 SOFTROCE_GID_INDEX=$gidx HOSTNAME=softroce-vm \
  SOFTROCE_DEV2=rxe1 SOFTROCE_NETDEV2=veth2
ulimit -l unlimited
eval "set -- $(cat /run/vm/cmd)"
cd "$CWD" || fail "cd $CWD"
if [ "$RUN_UID" = 0 ]; then
  "$@" </dev/null
else
  setpriv --reuid="$RUN_UID" --regid="$RUN_GID" --clear-groups -- "$@" </dev/null
fi
rc=$?
sync
echo "$rc" > /run/vm/status
exit "$rc"
EOF

(cd "$ird" && find . | cpio -o -H newc --quiet) | gzip -1 > "$work/initramfs.gz"

q=(-name bccl-softroce -nodefaults -no-user-config -machine pc "${accel[@]}" -m "$mem" -smp "$cpus"
   -display none -vga none -no-reboot -nic none -chardev stdio,id=con,signal=on -serial chardev:con
   -kernel "$kernel" -initrd "$work/initramfs.gz"
   -append "console=ttyS0 panic=-1 quiet loglevel=3 tsc=reliable no_timer_check")
share() { q+=(-fsdev "local,id=$1,path=$2,security_model=none,multidevs=remap$3"
              -device "virtio-9p-pci,fsdev=$1,mount_tag=$4"); }
share fsroot / ",readonly=on" hostroot
share fsctl "$ctl" "" ctl
[ "$cwd" != / ] && share fscwd "$cwd" "" cwd

log "booting $kernel (${accel[1]}, $cpus cpus, $mem)"
start=$(date +%s)
if [ "$timeout_s" != 0 ]; then
  timeout -k 5 "$timeout_s" qemu-system-x86_64 "${q[@]}" </dev/null &
else
  qemu-system-x86_64 "${q[@]}" </dev/null &
fi
qpid=$!
set +e
wait "$qpid"; qrc=$?
set -e
qpid=""
log "VM ran $(( $(date +%s) - start )) s (qemu exit $qrc)"
[ "$qrc" = 124 ] && [ "$timeout_s" != 0 ] && { log "timed out after ${timeout_s} s"; exit 124; }
[ -s "$ctl/status" ] && exit "$(cat "$ctl/status")"
log "the guest reported no status (boot failure or panic?)"
exit 125
