#!/bin/bash
# L1's second stage: PID 1 on the outer host's root (see l1-init.sh), run by
# the host's own bash. It finishes the system mounts, mounts each --share at
# its own path, runs the command as root with its stdout and stderr on the
# virtio-serial ports kvmpod.stdout and kvmpod.stderr, writes its exit
# status to the control share and powers L1 off.
#
# The control share (/run/kvmpod-nested/ctl) holds, NUL-terminated, from run:
#   argv    the command and its arguments
#   shares  the --share directories, in the order of their 9p tags kvmpod.sN
#   env     NAME=value pairs passed through from the caller
#   cwd     the caller's working directory
#   path    PATH for the command
# and gets back from here:
#   status  the command's exit status (128 + N after signal N)
nested=/run/kvmpod-nested
bb=$nested/busybox
ctl=$nested/ctl

stage() { echo "nested: stage $1 (uptime $("$bb" cut -d' ' -f1 /proc/uptime) s)"; }
power_off() {
    "$bb" sync
    "$bb" poweroff -f
    "$bb" reboot -f
}
fail() {
    echo "nested: error: $*"
    power_off
}

# A heartbeat on the console every 30 s: when a run hangs, its console
# tells a wedged L1 (no heartbeat) from a stuck process (its name and
# kernel wait channel, when it is in uninterruptible sleep).
heartbeat() {
    local f line st pid comm stuck
    while "$bb" sleep 30; do
        stuck=""
        for f in /proc/[0-9]*/stat; do
            IFS= read -r line <"$f" 2>/dev/null || continue
            st=${line##*) }
            [ "${st%% *}" = D ] || continue
            pid=${f#/proc/}
            pid=${pid%/stat}
            comm=${line#*(}
            stuck+=" $pid:${comm%)*}@$(<"/proc/$pid/wchan")"
        done 2>/dev/null
        echo "nested: alive (uptime $("$bb" cut -d' ' -f1 /proc/uptime) s, load $("$bb" cut -d' ' -f1-3 /proc/loadavg))${stuck:+ uninterruptible:$stuck}"
    done
}

stage stage2
heartbeat </dev/null &

"$bb" mkdir -p /dev/pts /dev/shm
"$bb" mount -t devpts -o mode=0620,ptmxmode=0666 devpts /dev/pts
"$bb" mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /dev/shm
"$bb" mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
# L1 is a fresh host: no pods of the outer host's in kvmpod's state.
[ -d /var/lib/kvmpod ] && "$bb" mount -t tmpfs -o mode=0755 tmpfs /var/lib/kvmpod
"$bb" hostname kvmpod-nested
"$bb" ip link set lo up

i=0
while IFS= read -r -d '' dir; do
    "$bb" mkdir -p "$dir" \
        && "$bb" mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=mmap "kvmpod.s$i" "$dir" \
        || fail "cannot mount --share $dir (9p tag kvmpod.s$i)"
    i=$((i + 1))
done <"$ctl/shares"
stage shares-mounted

# The ports appear once virtio_console has talked to QEMU.
out="" err=""
for _ in $("$bb" seq 100); do
    for port in /sys/class/virtio-ports/*; do
        [ -r "$port/name" ] || continue
        case $(<"$port/name") in
            kvmpod.stdout) out=/dev/${port##*/} ;;
            kvmpod.stderr) err=/dev/${port##*/} ;;
        esac
    done
    [ -n "$out" ] && [ -n "$err" ] && [ -c "$out" ] && [ -c "$err" ] && break
    "$bb" sleep 0.1
done
[ -c "$out" ] && [ -c "$err" ] || fail "the virtio-serial ports kvmpod.stdout and kvmpod.stderr did not appear"

mapfile -d '' -t argv <"$ctl/argv"
mapfile -d '' -t envs <"$ctl/env"
IFS= read -r -d '' cwd <"$ctl/cwd"
IFS= read -r -d '' path <"$ctl/path"
[ "${#argv[@]}" -gt 0 ] || fail "no command in $ctl/argv"

stage command-started
(
    # A clean environment: PATH, HOME and what run passed through.
    for name in $(compgen -e); do unset "$name" 2>/dev/null; done
    export PATH="$path" HOME=/root USER=root LOGNAME=root SHELL=/bin/bash KVMPOD_NESTED=1
    for kv in "${envs[@]}"; do export "$kv"; done
    cd -- "$cwd" 2>/dev/null || cd /
    if [[ ${argv[0]} != */* ]] && ! type -P -- "${argv[0]}" >/dev/null; then
        echo "nested: ${argv[0]}: command not found" >&2
        exit 127
    fi
    exec -- "${argv[@]}"
) </dev/null >"$out" 2>"$err"
status=$?
echo "$status" >"$ctl/status"
stage "command-exited status=$status"
power_off
