#!/bin/busybox sh
# L1's /init, first stage, in the initramfs that tests/nested/run builds:
# busybox, this script, l1-stage2.sh and the kernel modules listed (in load
# order) in /etc/modules.load. It makes L1 a KVM host (kvm_amd on QEMU's
# emulated SVM, vhost_vsock), puts the outer host's root (9p, read-only)
# under a tmpfs overlay and switch_roots into it, where l1-stage2.sh runs
# the command. Every step prints "nested: stage NAME" on the console, which
# run shows when L1 fails.
bb=/bin/busybox

$bb mkdir -p /proc /sys /dev /ovl /newroot
$bb mount -t proc proc /proc
$bb mount -t sysfs sysfs /sys
$bb mount -t devtmpfs devtmpfs /dev

stage() { echo "nested: stage $1 (uptime $($bb cut -d' ' -f1 /proc/uptime) s)"; }
fail() {
    echo "nested: error: $*"
    $bb dmesg | $bb tail -n 20
    $bb poweroff -f
    $bb reboot -f
}
p9() { $bb mount -t 9p -o "trans=virtio,version=9p2000.L,msize=512000,$1" "$2" "$3"; }

stage init

while read -r module; do
    $bb insmod "/lib/modules/$module" || echo "nested: insmod $module failed"
done </etc/modules.load
stage modules-loaded

[ -c /dev/kvm ] || fail "/dev/kvm is missing: kvm_amd did not load (does QEMU's -cpu have svm and npt?)"
[ -c /dev/vhost-vsock ] || fail "/dev/vhost-vsock is missing: vhost_vsock did not load"
stage kvm-ready

# The outer root, read-only, with L1's writes going to a tmpfs on top.
$bb mount -t tmpfs -o mode=0755 tmpfs /ovl
$bb mkdir -p /ovl/lower /ovl/upper /ovl/work
p9 ro,cache=loose kvmpod.root /ovl/lower || fail "cannot mount the outer root (9p tag kvmpod.root)"
$bb mount -t overlay -o lowerdir=/ovl/lower,upperdir=/ovl/upper,workdir=/ovl/work overlay /newroot \
    || fail "cannot put the overlay on the outer root"
[ -x /newroot/bin/bash ] || fail "the outer root has no /bin/bash"
stage root-mounted

# A fresh /run with what the second stage needs (the initramfs is emptied by
# switch_root) and the control share: the command, its settings, its status.
$bb mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /newroot/run
$bb mkdir -p /newroot/run/kvmpod-nested/ctl
$bb cp /bin/busybox /stage2 /newroot/run/kvmpod-nested/
p9 cache=none kvmpod.ctl /newroot/run/kvmpod-nested/ctl || fail "cannot mount the control share"
stage switch-root
for d in proc sys dev; do
    $bb mount --move "/$d" "/newroot/$d" || fail "cannot move /$d to the new root"
done
exec $bb switch_root /newroot /bin/bash /run/kvmpod-nested/stage2
