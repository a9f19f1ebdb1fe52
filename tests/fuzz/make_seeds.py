#!/usr/bin/env python3
"""Writes the checked-in seed corpora (tests/fuzz/corpus/TARGET/) in the input layouts the
targets document at their top. Run it again after changing a layout; libFuzzer grows its
own corpus from these (scripts/fuzz keeps that in the build directory)."""
import json
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus")


def write(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


u8 = lambda v: struct.pack("<B", v)
u16 = lambda v: struct.pack("<H", v)
u32 = lambda v: struct.pack("<I", v)
u64 = lambda v: struct.pack("<Q", v)

F_NEXT, F_WRITE, F_INDIRECT = 1, 2, 4
P_AVAIL, P_USED = 1 << 7, 1 << 15


def image(size, pieces):
    b = bytearray(size)
    for at, data in pieces:
        b[at:at + len(data)] = data
    return bytes(b)


def split_desc(addr, length, flags, nxt):
    return u64(addr) + u32(length) + u16(flags) + u16(nxt)


def packed_desc(addr, length, ident, flags):
    return u64(addr) + u32(length) + u16(ident) + u16(flags)


# --- split and packed queues (queue_fuzz.hpp) ---------------------------------------------
GPA_A = 0x10000


def split_image(base):
    """A 16-entry split ring at `base`: desc at +0, avail at +0x100, used at +0x180, an
    indirect table at +0x300. Chains: 0 -> 1 (readable, writable), 2 indirect."""
    descs = (split_desc(base + 0x1000, 64, F_NEXT, 1) + split_desc(base + 0x1100, 128, F_WRITE, 0) +
             split_desc(base + 0x300, 32, F_INDIRECT, 0))
    indirect = split_desc(base + 0x3000, 16, F_NEXT, 1) + split_desc(base + 0x3100, 16, F_WRITE, 0)
    avail = u16(0) + u16(2) + u16(0) + u16(2)
    return descs, avail, indirect


def packed_image(base):
    descs = (packed_desc(base + 0x1000, 64, 0, P_AVAIL | F_NEXT) +
             packed_desc(base + 0x1100, 128, 0, P_AVAIL | F_WRITE) +
             packed_desc(base + 0x300, 32, 1, P_AVAIL | F_INDIRECT))
    indirect = packed_desc(base + 0x3000, 16, 0, 0) + packed_desc(base + 0x3100, 16, 0, F_WRITE)
    return descs, indirect


def queue_ops():
    return (u8(0) + u8(0) + u8(4) + u32(100) + u8(4) + u32(8) + u8(6) + u8(7) + u8(1) + u8(0) +
            u8(5) + u8(0) + u8(9) + u8(1) + u8(0) + u8(6))


def queue_seeds():
    descs, avail, indirect = split_image(GPA_A)
    img = image(0x320, [(0, descs), (0x100, avail), (0x300, indirect)])
    head = u16(4) + u8(3) + u8(0) + u16(0) + u8(0) + u16(0x100) + u8(0) + u16(0x180) + u32(0) + u8(16)
    write("split_queue_fuzz", "two-chains-indirect", head + u16(len(img)) + img + queue_ops())
    head = u16(4) + u8(0) + u8(0) + u16(0) + u8(0) + u16(0x100) + u8(0) + u16(0x180) + u32(0) + u8(1)
    write("split_queue_fuzz", "capacity-one", head + u16(len(img)) + img + queue_ops())

    descs, indirect = packed_image(GPA_A)
    img = image(0x320, [(0, descs), (0x300, indirect)])
    head = u16(15) + u8(3) + u8(0) + u16(0) + u8(0) + u16(0x100) + u8(0) + u16(0x110) + u32(0x80008000) + u8(16)
    write("packed_queue_fuzz", "two-buffers-indirect", head + u16(len(img)) + img + queue_ops())
    head = u16(2) + u8(0) + u8(0) + u16(0) + u8(0) + u16(0x100) + u8(0) + u16(0x110) + u32(0x80008000) + u8(2)
    write("packed_queue_fuzz", "ring-of-three", head + u16(len(img)) + img + queue_ops())


# --- virtio-net header (net_header_fuzz.cpp) ----------------------------------------------
CSUM, HOST_TSO4, HOST_TSO6, HOST_ECN, HOST_UFO, MRG_RXBUF = 1, 1 << 11, 1 << 12, 1 << 13, 1 << 14, 1 << 15
VERSION_1 = 1 << 32
HOST_USO = 1 << 56


def net_hdr(flags=0, gso_type=0, hdr_len=0, gso_size=0, csum_start=0, csum_offset=0, n=12):
    h = u8(flags) + u8(gso_type) + u16(hdr_len) + u16(gso_size) + u16(csum_start) + u16(csum_offset)
    return h + (u16(0) if n == 12 else b"")


def eth(length):
    return bytes([0xff] * 6 + [2, 0, 0, 0, 0, 1, 0x08, 0x00]) + bytes((i * 7) & 0xff for i in range(length - 14))


def net_seeds():
    feats = CSUM | HOST_TSO4 | HOST_TSO6 | HOST_ECN | HOST_UFO | HOST_USO | VERSION_1 | MRG_RXBUF
    def seed(features, mode, cuts, max_rx, packet):
        return u64(features) + u8(mode) + u8(len(cuts)) + b"".join(u16(c) for c in cuts) + u16(max_rx) + packet
    write("net_header_fuzz", "tx-plain", seed(VERSION_1, 0, [12], 0, net_hdr() + eth(60)))
    write("net_header_fuzz", "tx-csum-split-header", seed(feats, 0, [6, 20], 0,
          net_hdr(1, 0, 0, 0, 34, 16) + eth(100)))
    write("net_header_fuzz", "tx-tso4", seed(feats, 0, [12, 54], 0,
          net_hdr(1, 1, 54, 1448, 34, 16) + eth(200)))
    write("net_header_fuzz", "tx-legacy-udp", seed(CSUM | HOST_UFO, 0, [], 0,
          net_hdr(1, 3, 42, 1000, 34, 6, n=10) + eth(80)))
    write("net_header_fuzz", "rx-one-buffer", seed(VERSION_1, 1, [1526], 1514, net_hdr() + eth(60)))
    write("net_header_fuzz", "rx-mergeable", seed(feats, 1, [64, 64, 64, 64], 300,
          net_hdr() + eth(200)))


# --- vhost-user session (vhost_session_fuzz.cpp) ------------------------------------------
V = 1          # version 1
NEED_REPLY = 8
UADDR = 0x7f0000000000


def msg(request, payload=b"", fds=(), flags=V):
    return u8(0) + u32(request) + u32(flags) + u16(len(payload)) + u8(len(fds)) + bytes(fds) + payload


def vring_state(index, num):
    return u32(index) + u32(num)


def vring_addr(index, desc, used, avail):
    return u32(index) + u32(0) + u64(desc) + u64(used) + u64(avail) + u64(0)


def session(packed):
    RAM = 16 * 4096
    features = VERSION_1 | (1 << 29) | (1 << 28) | (1 << 30) | CSUM | MRG_RXBUF | (1 << 16)
    if packed:
        features |= 1 << 34
    # MQ, RARP, REPLY_ACK, MTU, CONFIG, CONFIGURE_MEM_SLOTS, STATUS
    protocol = (1 << 0) | (1 << 2) | (1 << 3) | (1 << 4) | (1 << 9) | (1 << 15) | (1 << 16)
    if packed:
        descs, indirect = packed_image(0)
        img = image(0x320, [(0, descs), (0x300, indirect)])
        base = 0x80008000
    else:
        descs, avail, indirect = split_image(0)
        img = image(0x320, [(0, descs), (0x100, avail), (0x300, indirect)])
        base = 0
    region = u64(0) + u64(RAM) + u64(UADDR) + u64(0)
    out = u8(15) + u16(len(img)) + img
    out += msg(1)                                    # GET_FEATURES
    out += msg(2, u64(features))                     # SET_FEATURES
    out += msg(15)                                   # GET_PROTOCOL_FEATURES
    out += msg(16, u64(protocol))                    # SET_PROTOCOL_FEATURES
    out += msg(17)                                   # GET_QUEUE_NUM
    out += msg(3)                                    # SET_OWNER
    out += msg(36)                                   # GET_MAX_MEM_SLOTS
    out += msg(5, u32(1) + u32(0) + region, fds=[0], flags=V | NEED_REPLY)  # SET_MEM_TABLE
    for q in (0, 1):
        out += msg(8, vring_state(q, 16))            # SET_VRING_NUM
        out += msg(10, vring_state(q, base))         # SET_VRING_BASE
        if packed:
            out += msg(9, vring_addr(q, UADDR + 0x0, UADDR + 0x110, UADDR + 0x100))
        else:
            out += msg(9, vring_addr(q, UADDR + 0x0, UADDR + 0x180, UADDR + 0x100))
        out += msg(12, u64(q), fds=[3])              # SET_VRING_KICK
        out += msg(13, u64(q), fds=[4])              # SET_VRING_CALL
        out += msg(18, vring_state(q, 1), flags=V | NEED_REPLY)  # SET_VRING_ENABLE
    out += u8(6)                                     # data plane runs
    out += msg(24, u32(0) + u32(12) + u32(0) + bytes(12))  # GET_CONFIG
    out += msg(20, u64(1500), flags=V | NEED_REPLY)  # NET_SET_MTU
    out += msg(19, bytes([0xa0, 0xb0, 0xc0, 0xd0, 0xe0, 0xf0, 0, 0]))  # SEND_RARP
    out += msg(39, u64(15))                          # SET_STATUS
    out += msg(11, vring_state(0, 0))                # GET_VRING_BASE
    out += msg(37, u64(0) + u64(0x100000) + u64(4096) + u64(UADDR + 0x100000) + u64(0), fds=[2])  # ADD_MEM_REG
    out += msg(38, u64(0) + u64(0x100000) + u64(4096) + u64(UADDR + 0x100000) + u64(0))  # REM_MEM_REG
    out += msg(34)                                   # RESET_DEVICE
    return out


def vhost_seeds():
    write("vhost_session_fuzz", "qemu-split", session(False))
    write("vhost_session_fuzz", "qemu-packed", session(True))
    write("vhost_session_fuzz", "forty-fds", u8(0) + u16(0) + msg(5, u32(1) + u32(0) + bytes(32), fds=[0, 3, 5, 6, 7, 2, 4, 1, 0, 3, 5, 6, 7, 2, 4]))
    write("vhost_session_fuzz", "truncated", u8(0) + u16(0) + u8(0x80) + u32(1) + u32(1) + u16(0) + u8(0) + u32(100))


# --- grammar, config file, control JSON ----------------------------------------------------
def text_seeds():
    write("grammar_fuzz", "config", "# vpd.conf\nvp0 peer=/run/qemu/g1/p2p.sock bind=/run/vpd/vp0.sock mac=a0b0c0d0e0f0 peerfeats=0x19c3 up\n"
          "vp1 bridge=br0 address=192.168.1.1/24 address=fd00::1/64 mtu=9000 -rxcsum -tso4 queues=2\n"
          "bind=/run/vpd/x.sock mode=0660 owner=libvirt-qemu group=kvm transport=stream peerfeats=0\n")
    write("grammar_fuzz", "vpctl", "vp0 create legacy priority=10 transport=tap 10.0.0.1 -bridge -peer -address=192.168.1.1/24 name=eth")
    write("grammar_fuzz", "iopkt", "peer=/a,bind=/b,mac=a0:b0:c0:d0:e0:f0,peer=/c,bind=/d,mac=a0-b0-c0-d0-e0-f1")
    req = lambda **k: json.dumps({"version": 1, **k}) + "\n"
    write("control_json_fuzz", "set", req(op="set", endpoint="vp0", args=["mtu=9000", "up"]))
    write("control_json_fuzz", "create", req(op="create", args=["name=vp"]))
    write("control_json_fuzz", "list", req(op="list"))
    write("control_json_fuzz", "response-error", json.dumps({"version": 1, "ok": False, "error": {"code": "invalid-mac", "message": "no"}}) + "\n")
    write("control_json_fuzz", "response-ok", json.dumps({"version": 1, "ok": True, "result": {"endpoints": []}, "warnings": ["w"]}) + "\n")
    ep = {"name": "vp0", "transport": "vhost-user", "peer": "", "bind": "/run/vpd/vp0.sock", "mac": "a0:b0:c0:d0:e0:f0",
          "peerfeats": "0x19c3", "legacy": False, "priority": 0, "mtu": 1500, "bridge": "br0", "addresses": ["192.168.1.1/24"],
          "toggles": ["rxcsum", "txcsum"], "up": True, "queues": 1, "mode": "0660", "owner": "", "group": ""}
    write("control_json_fuzz", "state", json.dumps({"version": 1, "endpoints": [{**ep, "declared": "vp0 bind=/run/vpd/vp0.sock up"}]}, indent=2) + "\n")


# --- stream framing (stream_framing_fuzz.cpp) ---------------------------------------------
def stream_seeds():
    frame = lambda n: struct.pack(">I", n) + eth(n)
    write("stream_framing_fuzz", "three-frames", u16(34) + u16(16) + u8(2) + u16(3) + u16(100) +
          frame(60) + frame(1514) + frame(61))
    write("stream_framing_fuzz", "runt-then-frame", u16(20) + u16(6) + u8(1) + u16(7) +
          struct.pack(">I", 5) + bytes(5) + frame(64))
    write("stream_framing_fuzz", "bad-length", u16(0) + u16(0) + u8(0) + frame(60) +
          struct.pack(">I", 4096 + 65537))


if __name__ == "__main__":
    stream_seeds()
    queue_seeds()
    net_seeds()
    vhost_seeds()
    text_seeds()
    print("seeds written under", os.path.relpath(OUT, os.getcwd()), file=sys.stderr)
