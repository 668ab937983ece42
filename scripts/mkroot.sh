#!/bin/sh
# Builds a tiny app root from Debian's busybox-static: /bin/busybox, a
# symlink per applet, and the /etc files a user lookup needs. The examples
# and the boot tests use it, so no image registry is needed.
#
#   scripts/mkroot.sh <directory>
set -eu

root=${1:?usage: mkroot.sh <directory>}
busybox=${BUSYBOX:-/bin/busybox}

if [ ! -x "$busybox" ]; then
    echo "mkroot.sh: $busybox not found: run 'make deps' (it installs busybox-static)" >&2
    exit 1
fi
if ! "$busybox" --list >/dev/null 2>&1; then
    echo "mkroot.sh: $busybox does not run" >&2
    exit 1
fi

mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/root"
chmod 1777 "$root/tmp"
cp "$busybox" "$root/bin/busybox.new"
mv -f "$root/bin/busybox.new" "$root/bin/busybox"
for applet in $("$busybox" --list); do
    [ "$applet" = busybox ] || ln -sfn busybox "$root/bin/$applet"
done
cat > "$root/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
cat > "$root/etc/group" <<'GROUP'
root:x:0:
nogroup:x:65534:
GROUP
