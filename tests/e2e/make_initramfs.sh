#!/usr/bin/env bash
# Builds the end-to-end tier's guest: Debian's kernel and a busybox initramfs whose /init
# loads the virtio-net modules, configures eth0 from the kernel command line, pings, prints
# one result line on the serial console and powers off.
# Usage: make_initramfs.sh OUTDIR   -> OUTDIR/vmlinuz, OUTDIR/initramfs.cpio.gz
set -euo pipefail
out=${1:?usage: make_initramfs.sh OUTDIR}
mkdir -p "$out"
kernel=$(ls /boot/vmlinuz-* 2>/dev/null | sort -V | tail -n 1)
[ -n "$kernel" ] || { echo "make_initramfs: no /boot/vmlinuz-* (install linux-image-amd64)" >&2; exit 1; }
version=${kernel#/boot/vmlinuz-}
moddir=/lib/modules/$version/kernel
busybox=$(command -v busybox || true)
[ -x /bin/busybox ] && busybox=/bin/busybox
[ -n "$busybox" ] || { echo "make_initramfs: no busybox (install busybox-static)" >&2; exit 1; }

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,sbin,proc,sys,dev,lib/modules,tmp}
cp "$busybox" "$root/bin/busybox"
for tool in sh mount insmod ip ping sleep cat echo poweroff grep sed seq ifconfig udhcpc nc awk; do
  ln -s busybox "$root/bin/$tool"
done

# Order matters: each module needs the ones before it.
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover \
         net_failover virtio_net; do
  f=$(find "$moddir" -name "$m.ko*" | head -n 1)
  if [ -z "$f" ]; then
    # Built into the kernel: nothing to load.
    continue
  fi
  case "$f" in
    *.xz) xz -dc "$f" > "$root/lib/modules/$m.ko" ;;
    *.zst) zstd -qdc "$f" > "$root/lib/modules/$m.ko" ;;
    *.gz) gzip -dc "$f" > "$root/lib/modules/$m.ko" ;;
    *) cp "$f" "$root/lib/modules/$m.ko" ;;
  esac
  echo "$m" >> "$root/lib/modules/order"
done

# udhcpc's script: on a lease, the address and the default route; one console line.
cat > "$root/bin/vp-dhcp" <<'DHCP'
#!/bin/sh
case "$1" in
  deconfig) ip addr flush dev "$interface" ;;
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/$mask" dev "$interface"
    [ -n "$router" ] && ip route replace default via "${router%% *}" dev "$interface"
    echo "VP-E2E-DHCP: $ip/$mask router ${router%% *} lease $lease"
    ;;
esac
exit 0
DHCP
chmod +x "$root/bin/vp-dhcp"

cat > "$root/init" <<'INIT'
#!/bin/sh
# Kernel command line: vp.ip=A/N|dhcp vp.peer=ADDR [vp.count=N] [vp.wait=SECONDS]
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
for m in $(cat /lib/modules/order 2>/dev/null); do insmod /lib/modules/$m.ko 2>/dev/null; done
ip=; peer=; count=3; wait=30
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    vp.ip=*) ip=${arg#vp.ip=} ;;
    vp.peer=*) peer=${arg#vp.peer=} ;;
    vp.count=*) count=${arg#vp.count=} ;;
    vp.wait=*) wait=${arg#vp.wait=} ;;
  esac
done
ip link set lo up
ip link set eth0 up
if [ "$ip" = dhcp ]; then
  # A lease through vpd and the bridge, or a result line that says there was none.
  udhcpc -i eth0 -s /bin/vp-dhcp -n -q -t 10 -T 2 -A 1 || echo "VP-E2E-DHCP: no lease"
else
  ip addr add "$ip" dev eth0
fi
echo "VP-E2E: eth0 $(cat /sys/class/net/eth0/address) $ip, pinging $peer"
ok=0
for i in $(seq 1 "$wait"); do
  if ping -c 1 -W 1 "$peer" >/dev/null 2>&1; then ok=1; break; fi
done
if [ "$ok" = 1 ] && ping -c "$count" -W 2 "$peer"; then
  echo "VP-E2E-RESULT: ok"
else
  echo "VP-E2E-RESULT: fail"
fi
# VP_STREAM=PORT: take one TCP connection on PORT in the background and, when it ends, check
# what came: lines "VPSEQ N PAYLOAD" with N counting from 0 in eight digits and PAYLOAD that
# number 160 times, then "VPEND". Any byte lost, doubled, reordered or changed on the way
# (in vpd, or in guest memory that a live migration failed to copy) makes a bad line.
if [ "${VP_STREAM:-0}" != 0 ]; then
  (
    nc -l -p "$VP_STREAM" > /tmp/stream
    awk 'BEGIN { n = 0; bad = 0; end = 0 }
         $0 == "VPEND" { end = 1; next }
         { want = sprintf("%08d", n); p = ""; for (i = 0; i < 160; i++) p = p want
           if (end || NF != 3 || $1 != "VPSEQ" || $2 != want || $3 != p) bad++
           n++ }
         END { printf "VP-E2E-STREAM: lines %d bad %d end %d\n", n, bad, end }' /tmp/stream
  ) &
  echo "VP-E2E-STREAM: listening on $VP_STREAM"
fi
# VP_PINGLOOP=N (kernel command line): N more pings, one line each, about a second apart
# (answered or not), so a test can watch traffic stop and resume (e.g. across vpd restarts)
# for N seconds.
i=0
while [ "$i" -lt "${VP_PINGLOOP:-0}" ]; do
  if ping -c 1 -W 1 "$peer" >/dev/null 2>&1; then echo "VP-E2E-PING: ok $i"; else echo "VP-E2E-PING: fail $i"; fi
  sleep 1
  i=$((i + 1))
done
# VP_LINGER=S: stay up S seconds so the host can ping the guest.
sleep "${VP_LINGER:-0}"
poweroff -f
INIT
chmod +x "$root/init"
cp "$kernel" "$out/vmlinuz"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) > "$out/initramfs.cpio.gz"
echo "make_initramfs: $out/vmlinuz ($version), $out/initramfs.cpio.gz"
