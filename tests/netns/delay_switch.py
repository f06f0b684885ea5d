#!/usr/bin/env python3
"""A userspace switch with a fixed one-way delay, for kernels built without sch_netem.

netns_env.sh uses `tc netem` to make the links between the host namespaces slow; where the
kernel lacks netem (tc: "Specified qdisc kind is unknown") it joins the namespaces through this
instead: each namespace gets a TUN device, and this process forwards every IPv4 packet to the
TUN of the namespace owning the destination address, `--delay-ms` after it arrived. A fixed
delay keeps packets in arrival order, so one FIFO queue serves every destination.
"""
import argparse
import collections
import ctypes
import fcntl
import os
import select
import signal
import struct
import sys
import time

CLONE_NEWNET = 0x40000000
TUNSETIFF = 0x400454CA
IFF_TUN, IFF_NO_PI = 0x0001, 0x1000

libc = ctypes.CDLL(None, use_errno=True)


def enter_netns(fd):
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def attach_tun(netns, ifname):
    """Opens the existing TUN device `ifname` of namespace `netns` (a TUN belongs to the
    namespace of the process that attaches it, so step into it for the ioctl)."""
    target = os.open(f"/var/run/netns/{netns}", os.O_RDONLY)
    try:
        enter_netns(target)
    finally:
        os.close(target)
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", ifname.encode(), IFF_TUN | IFF_NO_PI))
    return fd


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hosts", type=int, required=True)
    p.add_argument("--delay-ms", type=float, required=True)
    p.add_argument("--prefix", default="bccl-h")
    p.add_argument("--ifname", default="bccl0")
    p.add_argument("--subnet", default="10.77.0", help="host k is <subnet>.<k+1>")
    p.add_argument("--ready", help="file to create once every TUN is attached")
    a = p.parse_args()

    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    tuns = [attach_tun(f"{a.prefix}{k}", a.ifname) for k in range(a.hosts)]
    enter_netns(home)
    os.close(home)
    subnet = bytes(int(x) for x in a.subnet.split("."))
    delay = a.delay_ms / 1000.0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if a.ready:
        with open(a.ready, "w") as f:
            f.write(f"{os.getpid()}\n")

    poller = select.epoll()
    for fd in tuns:
        poller.register(fd, select.EPOLLIN)
    queue = collections.deque()  # (release time, destination fd, packet)
    while True:
        timeout = max(0.0, queue[0][0] - time.monotonic()) if queue else 1.0
        events = poller.poll(timeout)
        now = time.monotonic()
        for fd, _ in events:
            for _ in range(256):  # bounded, so one busy sender cannot starve the queue
                try:
                    pkt = os.read(fd, 65536)
                except BlockingIOError:
                    break
                # IPv4 only; destination address at bytes 16..19.
                if len(pkt) < 20 or pkt[0] >> 4 != 4 or pkt[16:19] != subnet:
                    continue
                host = pkt[19] - 1
                if 0 <= host < len(tuns):
                    queue.append((now + delay, tuns[host], pkt))
        now = time.monotonic()
        while queue and queue[0][0] <= now:
            _, fd, pkt = queue.popleft()
            try:
                os.write(fd, pkt)
            except OSError:
                pass  # a full or vanished TUN drops the packet, as a wire would


if __name__ == "__main__":
    main()
