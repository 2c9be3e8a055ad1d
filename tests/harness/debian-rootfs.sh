#!/bin/bash
# debian-rootfs.sh CACHE_DIR [SUITE]
#
# Prints the path of a zstd tarball of a minimal Debian SUITE (bookworm, the
# default, or trixie) that boots under systemd-nspawn
# (tests/harness/nspawn-debian.sh) and has what the package test needs:
# systemd, dbus, nginx, adduser, procps, polkitd, and python3-aiosmtpd (an
# SMTP server that writes a Maildir).  It is built once and kept in CACHE_DIR
# (under target/), named after the suite and a hash of this script, so editing
# the recipe rebuilds it and nothing else does.
#
# The mirror is the one this machine's own apt sources use for SUITE (deb822
# *.sources or sources.list), never a hard-coded host; a suite the sources do
# not list comes from the mirror of the machine's own release, since one
# Debian mirror serves every suite.  No mirror, no network, no debootstrap
# (or one that does not know SUITE): exit 1 with the reason on stderr.
#
# Root only (debootstrap, chroot, a private mount namespace for /proc).
set -euo pipefail

die() { echo "debian-rootfs.sh: $*" >&2; exit 1; }

# What the package test needs, and unitwarden's own dependencies (adduser,
# procps), since the container has no network; polkitd comes later (below).
PACKAGES=systemd,systemd-sysv,dbus,nginx,adduser,procps

if [ "${1:-}" = --chroot-install ]; then
    # In a private mount namespace: /proc for the maintainer scripts, gone with us.
    ROOT=$2; shift 2
    mount -t proc proc "$ROOT/proc"
    # polkitd's maintainer script fails inside debootstrap (no system bus at
    # that stage), so it is installed here, after the base system.  Its
    # warnings about the missing bus are harmless.  (The same works for any
    # package the test needs.)
    DEBIAN_FRONTEND=noninteractive chroot "$ROOT" apt-get install -y -qq --no-install-recommends "$@"
    chroot "$ROOT" apt-get clean
    umount "$ROOT/proc"
    exit 0
fi

CACHE=${1:?usage: debian-rootfs.sh CACHE_DIR [SUITE]}
SUITE=${2:-bookworm}
case $SUITE in
    bookworm|trixie) ;;
    *) die "SUITE must be bookworm or trixie, not '$SUITE'" ;;
esac
[ "$(id -u)" = 0 ] || die "must run as root (debootstrap and chroot)"
for tool in debootstrap chroot unshare tar zstd sha256sum; do
    command -v "$tool" >/dev/null 2>&1 ||
        die "$tool not found (Debian packages: debootstrap, coreutils, util-linux, tar, zstd)"
done
[ -e "/usr/share/debootstrap/scripts/$SUITE" ] ||
    die "this debootstrap does not know $SUITE (no /usr/share/debootstrap/scripts/$SUITE): install a newer debootstrap"

SELF=$(readlink -f "$0")
KEY=$(sha256sum "$SELF" | cut -c1-16)
TARBALL=$CACHE/$SUITE-$KEY.tar.zst
if [ -s "$TARBALL" ]; then
    echo "$TARBALL"
    exit 0
fi

# The first URI of the first binary (deb) stanza whose Suites list the suite
# itself, not -security or -updates.
mirror_of() {
    local suite=$1 f uri=""
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -e "$f" ] || continue
        # Stanzas end at blank lines.
        uri=$(awk -v suite="$suite" '
            function stanza_end() {
                if (!done && binary && found && uris != "") { print uris; done = 1 }
                uris = ""; found = 0; binary = 0
            }
            /^[[:space:]]*$/ { stanza_end(); next }
            /^Types:/ { for (i = 2; i <= NF; i++) if ($i == "deb") binary = 1 }
            /^URIs:/ { uris = $2 }
            /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == suite) found = 1 }
            END { stanza_end() }' "$f")
        [ -n "$uri" ] && break
    done
    if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
        uri=$(awk -v suite="$suite" '$1 == "deb" && $3 == suite { print $2; exit }' /etc/apt/sources.list)
    fi
    echo "$uri"
}
mirror=$(mirror_of "$SUITE")
if [ -z "$mirror" ]; then
    own=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
    [ -n "$own" ] && mirror=$(mirror_of "$own")
fi
[ -n "$mirror" ] || die "no Debian mirror for $SUITE in this machine's apt sources (/etc/apt/sources.list, /etc/apt/sources.list.d/*.sources)"
echo "debian-rootfs.sh: building $TARBALL from $mirror (once; it is cached)" >&2

mkdir -p "$CACHE"
WORK=$(mktemp -d "$CACHE/.rootfs.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
ROOT=$WORK/root
t0=$SECONDS
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$ROOT" "$mirror" >"$WORK/debootstrap.log" 2>&1 || {
    tail -n 30 "$WORK/debootstrap.log" >&2
    die "debootstrap $SUITE from $mirror failed (network to the mirror?); last lines above"
}
unshare --mount --propagation private "$SELF" --chroot-install "$ROOT" polkitd python3-aiosmtpd \
    >"$WORK/chroot-install.log" 2>&1 || {
    tail -n 30 "$WORK/chroot-install.log" >&2
    die "installing polkitd and python3-aiosmtpd in the chroot failed; last lines above"
}

echo unitwarden-e2e > "$ROOT/etc/hostname"
# Units that only cost boot time in a throw-away container.
for unit in systemd-timesyncd.service apt-daily.timer apt-daily-upgrade.timer \
            e2scrub_all.timer fstrim.timer dpkg-db-backup.timer; do
    ln -sf /dev/null "$ROOT/etc/systemd/system/$unit"
done
rm -f "$ROOT"/var/cache/apt/archives/*.deb

tar --numeric-owner --xattrs -C "$ROOT" -cf - . | zstd -q -T0 -o "$WORK/rootfs.tar.zst"
mv "$WORK/rootfs.tar.zst" "$TARBALL"
# Tarballs of earlier versions of this recipe are stale now.
for old in "$CACHE/$SUITE"-*.tar.zst; do
    [ "$old" = "$TARBALL" ] || rm -f "$old"
done
echo "debian-rootfs.sh: built in $((SECONDS - t0))s, $(du -m "$TARBALL" | cut -f1) MB" >&2
echo "$TARBALL"
