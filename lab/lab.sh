#!/usr/bin/env bash
# The BigDataFlow local lab: Debian machines as systemd-nspawn containers on the host's
# own bridge, so the Ansible playbooks deploy onto them as onto bare VMs.
# Topology: inventory/lab/hosts.yml (machines, addresses, groups);
# settings: inventory/lab/group_vars/all.yml (lab_* keys); another lab's inventory folder
# with LAB_INVENTORY (e.g. inventory/lab-cluster). Run `lab/lab.sh --help`.
set -euo pipefail

LAB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$LAB_DIR")
# The control node's Debian packages, by group (read by `deps`).
DEPS_FILE=$REPO_DIR/deps/debian-12.txt
# Python for lab/topology.py (PyYAML): the project's .venv once `deps` has made it.
if [[ -z ${PYTHON:-} ]]; then
    PYTHON=python3
    [[ -x $REPO_DIR/.venv/bin/python ]] && PYTHON=$REPO_DIR/.venv/bin/python
fi
# Packages of the base root file system, on top of debootstrap's default set
# (what a bare Debian VM has, plus what Ansible needs to manage the machine).
BASE_PACKAGES=systemd,systemd-sysv,dbus,libpam-systemd,openssh-server,python3,python3-apt,sudo,acl,iproute2,iputils-ping,procps,less,curl,ca-certificates
# The inventory folder, as messages name it (lab/topology.py reads LAB_INVENTORY itself).
INVENTORY_NAME=${LAB_INVENTORY:-inventory/lab}
INVENTORY_NAME=${INVENTORY_NAME%/}
SSH_OPTS=(-o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
          -o LogLevel=ERROR -o ConnectTimeout=3)
CHANGED=0

usage() {
    cat <<'EOF'
Usage: lab/lab.sh COMMAND [ARGS]

The BigDataFlow local lab: Debian 12 machines as systemd-nspawn containers (systemd as
PID 1, sshd) on a bridge the lab creates, with NAT so they can apt-get install.
Machines and groups come from inventory/lab/hosts.yml; settings (bridge, subnet,
state dir, mirror, ...) from the lab_* keys of inventory/lab/group_vars/all.yml.
LAB_INVENTORY=inventory/lab-cluster (another folder of the same shape) picks another
lab; each has its own machines, bridge, NAT table and state dir.

Commands:
  deps            install what the control node needs for make demo / make e2e: the
                  Debian packages of the groups in DEPS (default: test deploy lab) from
                  deps/debian-12.txt with apt-get, then the project's .venv (make
                  install: ansible-core and the pinned Python packages)
  up              build the base root file system once (debootstrap, ~1 min), create
                  the bridge, the nftables NAT table and one machine per host, boot them
                  and wait until each answers `systemctl is-system-running`.
                  Idempotent: running machines are left alone.
  down [--purge]  stop the machines, delete their copies, remove the bridge and the
                  nftables table, restore net.ipv4.ip_forward. --purge also deletes the
                  cached base root file system and the lab SSH key (the whole state dir).
  status          show the bridge, the NAT table and each machine's state
  ssh NAME [CMD]  ssh to a machine as root with the lab key
  poweroff NAME   cut one machine's power: SIGKILL its systemd-nspawn and every process
                  of the container (no shutdown, as a power failure); `up` boots it again
  -h, --help      this help

Then: .venv/bin/ansible -i inventory/lab/hosts.yml all -m ping
Needs root. Environment: PYTHON (default .venv/bin/python, else python3), DEPS,
LAB_INVENTORY (default inventory/lab).
EOF
}

say()  { printf 'lab: %s\n' "$*" >&2; }
die()  { printf 'lab: error: %s\n' "$*" >&2; exit 1; }
changed() { CHANGED=$((CHANGED + 1)); say "changed: $*"; }

need_root() { [[ $EUID -eq 0 ]] || die "must run as root (it creates a bridge, nftables rules and containers)"; }

need_tools() {
    local missing=() tool
    for tool in debootstrap systemd-nspawn nft ip ssh ssh-keygen setsid flock "$PYTHON"; do
        command -v "$tool" >/dev/null || missing+=("$tool")
    done
    ((${#missing[@]} == 0)) || die "missing: ${missing[*]}. Install with: make deps (or lab/lab.sh deps)"
}

load_topology() {
    local out
    out=$("$PYTHON" "$LAB_DIR/topology.py" shell) || exit 1
    eval "$out"
    BASE=$LAB_STATE_DIR/base
    MACHINES_DIR=$LAB_STATE_DIR/machines
    RUN_DIR=$LAB_STATE_DIR/run
    LOG_DIR=$LAB_STATE_DIR/log
    KEY=$LAB_STATE_DIR/ssh/id_ed25519
    TRASH_DIR=$LAB_STATE_DIR/trash
    SSH_OPTS+=(-i "$KEY")
}

lock_state() {
    mkdir -p "$LAB_STATE_DIR"
    exec 9>"$LAB_STATE_DIR/.lock"
    flock -n 9 || die "another lab/lab.sh is running (lock $LAB_STATE_DIR/.lock)"
}

# Delete what `down` moved to the trash, detached (a leftover is deleted by the next run).
empty_trash() {
    [[ -d $TRASH_DIR ]] || return 0
    setsid rm -rf --one-file-system "$TRASH_DIR" >/dev/null 2>&1 </dev/null 9>&- &
}

# --- pieces of `up` ---------------------------------------------------------------

ensure_key() {
    if [[ -f $KEY ]]; then return; fi
    install -d -m 0700 "$(dirname "$KEY")"
    ssh-keygen -q -t ed25519 -N '' -C bigdataflow-lab -f "$KEY"
    chmod 0600 "$KEY"
    changed "SSH key pair $KEY"
}

ensure_base() {
    if [[ -f $BASE/.bdf-lab-base ]]; then
        say "ok: base root file system $BASE"
        [[ $(cat "$BASE/.bdf-lab-base") == "$BASE_PACKAGES" ]] \
            || say "warning: the base was built with another package list; rebuild: lab/lab.sh down --purge"
        return
    fi
    local tmp=$BASE.tmp start=$SECONDS
    say "building the base root file system ($LAB_SUITE from $LAB_MIRROR), about a minute..."
    rm -rf --one-file-system "$tmp"
    mkdir -p "$LOG_DIR"
    debootstrap --include="$BASE_PACKAGES" "$LAB_SUITE" "$tmp" "$LAB_MIRROR" \
        >"$LOG_DIR/debootstrap.log" 2>&1 \
        || die "debootstrap failed, see $LOG_DIR/debootstrap.log: $(tail -n 3 "$LOG_DIR/debootstrap.log")"
    rm -f "$tmp/etc/apt/sources.list"
    cat >"$tmp/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $LAB_MIRROR
Suites: $LAB_SUITE $LAB_SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $LAB_SECURITY_MIRROR
Suites: $LAB_SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    chroot "$tmp" systemctl enable --quiet systemd-networkd
    chroot "$tmp" apt-get clean
    # Each machine gets its own identity when it is copied.
    : >"$tmp/etc/machine-id"
    rm -f "$tmp"/etc/ssh/ssh_host_*
    echo "$BASE_PACKAGES" >"$tmp/.bdf-lab-base"
    mv "$tmp" "$BASE"
    changed "base root file system $BASE built in $((SECONDS - start)) s"
}

ensure_network() {
    if [[ -d /sys/class/net/$LAB_BRIDGE ]]; then
        say "ok: bridge $LAB_BRIDGE"
    else
        ip link add "$LAB_BRIDGE" type bridge
        ip addr add "$LAB_GATEWAY/$LAB_PREFIX" dev "$LAB_BRIDGE"
        changed "bridge $LAB_BRIDGE with $LAB_GATEWAY/$LAB_PREFIX"
    fi
    ip link set "$LAB_BRIDGE" up   # a no-op when it is up already
    # Remember what to remove and restore on `down`, even if the inventory changes meanwhile.
    printf 'LAB_BRIDGE=%q\nLAB_NFT_TABLE=%q\n' "$LAB_BRIDGE" "$LAB_NFT_TABLE" >"$LAB_STATE_DIR/network.env"

    if [[ $(sysctl -n net.ipv4.ip_forward) == 1 ]]; then
        say "ok: net.ipv4.ip_forward=1"
    else
        [[ -f $LAB_STATE_DIR/ip_forward.orig ]] || echo 0 >"$LAB_STATE_DIR/ip_forward.orig"
        sysctl -q -w net.ipv4.ip_forward=1
        changed "net.ipv4.ip_forward=1 (restored by down)"
    fi

    local rule="ip saddr $LAB_SUBNET oifname != \"$LAB_BRIDGE\" masquerade" table
    table=$(nft list table ip "$LAB_NFT_TABLE" 2>/dev/null) || true
    if [[ $table == *"$rule"* ]]; then
        say "ok: nftables table ip $LAB_NFT_TABLE (masquerade $LAB_SUBNET)"
    else
        [[ -z $table ]] || nft delete table ip "$LAB_NFT_TABLE"
        nft -f - <<EOF
table ip $LAB_NFT_TABLE {
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        $rule
    }
}
EOF
        changed "nftables table ip $LAB_NFT_TABLE (masquerade $LAB_SUBNET)"
    fi
}

# pid of the machine's systemd-nspawn, or nothing
machine_pid() {
    local pid cmdline
    pid=$(cat "$RUN_DIR/$1.pid" 2>/dev/null) || return 0
    cmdline=$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline") || return 0
    [[ $cmdline == *" --machine=$1 "* ]] && echo "$pid"
    return 0
}

# A machine whose systemd-nspawn was killed (SIGKILL) leaves its container running
# without it: find that container's init by its machine-id and kill it, with its veth.
reap_orphan() {
    local name=$1 id proc
    id=$(cat "$MACHINES_DIR/$name/etc/machine-id" 2>/dev/null) || return 0
    [[ -n $id ]] || return 0
    for proc in /proc/[0-9]*; do
        [[ $(cat "$proc/comm" 2>/dev/null) == systemd ]] || continue
        grep -qE '^NSpid:.*[[:space:]]1$' "$proc/status" 2>/dev/null || continue   # init of a pid namespace
        [[ $(cat "$proc/root/etc/machine-id" 2>/dev/null) == "$id" ]] || continue
        say "killing $name's container left without systemd-nspawn (pid ${proc#/proc/})"
        kill -KILL "${proc#/proc/}" 2>/dev/null || true
        while [[ -e $proc ]]; do sleep 0.2; done
    done
    ip link delete "vb-$name" 2>/dev/null || true
    rm -rf "/run/systemd/nspawn/propagate/$name"
}

# Write a file inside a machine's root file system; count a change only if it differs.
put_file() {  # NAME PATH MODE CONTENT
    local path=$MACHINES_DIR/$1$2
    if [[ -f $path ]] && [[ $(cat "$path") == "$4" ]]; then return 1; fi
    mkdir -p "$(dirname "$path")"
    printf '%s\n' "$4" >"$path"
    chmod "$3" "$path"
}

# Hostname, /etc/hosts, DNS, static address (systemd-networkd), root's authorized_keys,
# and one lab-only drop-in.
machine_files() {  # NAME; returns 0 if any file changed
    local name=$1 addr=${LAB_ADDR[$1]} any=1 dns_lines="" dns
    for dns in "${LAB_DNS[@]}"; do dns_lines+="DNS=$dns"$'\n'; done
    put_file "$name" /etc/hostname 0644 "$name" && any=0
    put_file "$name" /etc/hosts 0644 "$HOSTS_FILE" && any=0
    put_file "$name" /etc/resolv.conf 0644 "$(printf 'nameserver %s\n' "${LAB_DNS[@]}")" && any=0
    put_file "$name" /etc/systemd/network/10-host0.network 0644 "[Match]
Name=host0

[Network]
Address=$addr/$LAB_PREFIX
Gateway=$LAB_GATEWAY
${dns_lines%$'\n'}
LinkLocalAddressing=no" && any=0
    put_file "$name" /root/.ssh/authorized_keys 0600 "$(cat "$KEY.pub")" && any=0
    # Lab only: in nspawn on a cgroup-v1/hybrid host, stopping root's user manager (started
    # by an ssh login) at poweroff sometimes hangs until its 2-minute timeout.
    put_file "$name" /etc/systemd/system/user@.service.d/10-bdf-lab.conf 0644 "[Service]
TimeoutStopSec=5s" && any=0
    chmod 0700 "$MACHINES_DIR/$name/root/.ssh"
    return $any
}

ensure_machine() {
    local name=$1 root=$MACHINES_DIR/$1 pid
    pid=$(machine_pid "$name")
    if [[ -n $pid ]]; then
        # Running: only /etc/hosts may be refreshed in place; the rest needs a restart.
        put_file "$name" /etc/hosts 0644 "$HOSTS_FILE" && changed "$name: /etc/hosts updated"
        if machine_files "$name"; then
            say "warning: $name runs with an old configuration; run lab/lab.sh down && lab/lab.sh up"
        fi
        say "ok: $name running (pid $pid, ${LAB_ADDR[$name]})"
        return
    fi
    reap_orphan "$name"
    if [[ ! -d $root ]]; then
        local start=$SECONDS
        mkdir -p "$MACHINES_DIR"
        cp -a "$BASE" "$root.tmp"
        mv "$root.tmp" "$root"
        # Own identity: machine-id (else systemd reports degraded) and SSH host keys.
        tr -d '-' </proc/sys/kernel/random/uuid >"$root/etc/machine-id"
        ssh-keygen -q -A -f "$root" >/dev/null
        changed "$name: root file system copied in $((SECONDS - start)) s"
    fi
    machine_files "$name" || true
    mkdir -p "$RUN_DIR" "$LOG_DIR"
    # SYSTEMD_NSPAWN_TMPFS_TMP=0: /tmp on disk as on a Debian 12 VM, not in RAM.
    # No host systemd/D-Bus: --register=no --keep-unit. fd 9 (the state lock) is not inherited.
    # Limits as on a Debian 12 VM, so units can raise LimitNOFILE / LimitMEMLOCK (Cassandra, Kafka).
    SYSTEMD_NSPAWN_TMPFS_TMP=0 setsid systemd-nspawn --register=no --keep-unit --boot \
        --directory="$root" --machine="$name" --network-bridge="$LAB_BRIDGE" \
        --resolv-conf=off --timezone=off --link-journal=no \
        --rlimit=RLIMIT_NOFILE=1024:524288 --rlimit=RLIMIT_MEMLOCK=8388608:infinity \
        >"$LOG_DIR/$name.log" 2>&1 </dev/null 9>&- &
    echo $! >"$RUN_DIR/$name.pid"
    changed "$name: started (pid $!, ${LAB_ADDR[$name]}, log $LOG_DIR/$name.log)"
}

# Wait until the machine answers `systemctl is-system-running` with running or degraded.
wait_machine() {
    local name=$1 addr=${LAB_ADDR[$1]} deadline=$((SECONDS + LAB_BOOT_TIMEOUT)) state=""
    while ((SECONDS < deadline)); do
        [[ -n $(machine_pid "$name") ]] \
            || die "$name: systemd-nspawn exited; last lines of $LOG_DIR/$name.log:"$'\n'"$(tail -n 15 "$LOG_DIR/$name.log")"
        state=$(ssh "${SSH_OPTS[@]}" "root@$addr" systemctl is-system-running 2>/dev/null) || true
        case $state in
            running) say "ok: $name ($addr) is running"; return ;;
            degraded)
                say "warning: $name ($addr) is degraded; failed units:"
                ssh "${SSH_OPTS[@]}" "root@$addr" systemctl --failed --no-legend --plain >&2 || true
                return ;;
        esac
        sleep 1
    done
    die "$name ($addr): no 'running' after ${LAB_BOOT_TIMEOUT} s (last state: '${state:-no ssh answer}');" \
        "see $LOG_DIR/$name.log or: lab/lab.sh ssh $name systemctl list-jobs"
}

# --- commands ---------------------------------------------------------------------

# The packages of the groups named (lines `GROUP: PACKAGE...` of deps/debian-12.txt).
deps_packages() {
    local group line
    for group in "$@"; do
        line=$(grep -E "^$group:" "$DEPS_FILE") \
            || die "deps: no group '$group' in $DEPS_FILE (have: $(grep -oE '^[a-z0-9_-]+:' "$DEPS_FILE" | tr -d : | xargs))"
        echo "${line#*:}"
    done
}

# Debian packages with apt-get, then the project's .venv: never pip into the system
# Python (Debian 12 forbids it, PEP 668); Ansible runs from .venv/bin.
cmd_deps() {
    (($# == 0)) || die "deps takes no arguments (choose the groups with DEPS=\"test deploy lab vagrant\")"
    need_root
    local groups pkgs missing=() pkg list
    read -ra groups <<<"${DEPS:-test deploy lab}"
    list=$(deps_packages "${groups[@]}") || exit 1
    read -ra pkgs <<<"$(xargs <<<"$list")"
    for pkg in "${pkgs[@]}"; do
        [[ $(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null) == "install ok installed" ]] || missing+=("$pkg")
    done
    if ((${#missing[@]} == 0)); then
        say "ok: Debian packages of ${groups[*]} installed"
    else
        say "apt-get install ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            -o DPkg::Lock::Timeout=300 "${missing[@]}" >/dev/null
        # Group promtool: Debian starts a Prometheus server on every address, with no
        # login, as it installs it; the control node needs its promtool only.
        if [[ " ${missing[*]} " == *" prometheus "* ]] && [[ -d /run/systemd/system ]]; then
            systemctl disable --now prometheus >/dev/null 2>&1 || say "warning: could not stop the prometheus service"
        fi
    fi
    make -C "$REPO_DIR" --no-print-directory install
}

cmd_up() {
    need_root
    need_tools
    load_topology
    lock_state
    local start=$SECONDS name pid
    HOSTS_FILE=$("$PYTHON" "$LAB_DIR/topology.py" hosts)
    "$PYTHON" "$LAB_DIR/topology.py" check-net || exit 1   # before the long debootstrap
    empty_trash
    ensure_key
    ensure_base
    ensure_network
    for name in "${LAB_MACHINES[@]}"; do ensure_machine "$name"; done
    for pid in "$RUN_DIR"/*.pid; do
        [[ -e $pid ]] || continue
        name=$(basename "$pid" .pid)
        [[ -v LAB_ADDR[$name] || -z $(machine_pid "$name") ]] \
            || say "warning: $name runs but is not in the inventory; lab/lab.sh down stops it"
    done
    for name in "${LAB_MACHINES[@]}"; do wait_machine "$name"; done
    say "up: ${#LAB_MACHINES[@]} machines in $((SECONDS - start)) s, changed=$CHANGED"
    say "next: .venv/bin/ansible -i $INVENTORY_NAME/hosts.yml all -m ping"
}

cmd_down() {
    local purge=0
    case ${1:-} in
        --purge) purge=1 ;;
        "") ;;
        *) die "down: unknown option '$1' (only --purge)" ;;
    esac
    need_root
    load_topology
    lock_state
    local start=$SECONDS pidfile name pid root pids=()
    for pidfile in "$RUN_DIR"/*.pid; do
        [[ -e $pidfile ]] || continue
        name=$(basename "$pidfile" .pid)
        pid=$(machine_pid "$name")
        if [[ -n $pid ]]; then
            kill -TERM "$pid"   # systemd-nspawn asks the container's systemd to power off
            pids+=("$pid")
            say "stopping $name (pid $pid)"
        fi
    done
    local deadline=$((SECONDS + 30))
    for pid in "${pids[@]}"; do
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
        if kill -0 "$pid" 2>/dev/null; then
            say "warning: pid $pid did not stop in 30 s; killing it"
            kill -KILL "$pid" || true
        fi
    done
    rm -f "$RUN_DIR"/*.pid
    ((${#pids[@]} == 0)) || say "stopped ${#pids[@]} machines in $((SECONDS - start)) s"
    for root in "$MACHINES_DIR"/*/; do
        [[ -d $root ]] && reap_orphan "$(basename "$root")"
    done
    if [[ -d $MACHINES_DIR ]]; then
        # Deleting ~1 GB just written can take half a minute on a slow disk: in the background.
        mkdir -p "$TRASH_DIR"
        mv "$MACHINES_DIR" "$TRASH_DIR/machines.$(date +%s%N)"
        empty_trash
        say "removed the machine copies (deleted in the background from $TRASH_DIR)"
    fi
    # The bridge and table created by `up` (recorded then), else those of the inventory.
    # shellcheck source=/dev/null
    [[ -f $LAB_STATE_DIR/network.env ]] && source "$LAB_STATE_DIR/network.env"
    if nft list table ip "$LAB_NFT_TABLE" >/dev/null 2>&1; then
        nft delete table ip "$LAB_NFT_TABLE"
        say "removed nftables table ip $LAB_NFT_TABLE"
    fi
    if [[ -d /sys/class/net/$LAB_BRIDGE/bridge ]]; then
        ip link delete "$LAB_BRIDGE"
        say "removed bridge $LAB_BRIDGE"
    fi
    if [[ -f $LAB_STATE_DIR/ip_forward.orig ]]; then
        sysctl -q -w "net.ipv4.ip_forward=$(cat "$LAB_STATE_DIR/ip_forward.orig")"
        rm -f "$LAB_STATE_DIR/ip_forward.orig"
        say "restored net.ipv4.ip_forward"
    fi
    rm -f "$LAB_STATE_DIR/network.env"
    if ((purge)); then
        rm -rf --one-file-system "$LAB_STATE_DIR"
        say "purged $LAB_STATE_DIR (base root file system, SSH key, logs)"
    else
        say "kept the base root file system $BASE (down --purge removes it)"
    fi
    say "down in $((SECONDS - start)) s"
}

cmd_status() {
    load_topology
    local name pid state
    if [[ -d /sys/class/net/$LAB_BRIDGE/bridge ]]; then
        echo "bridge    $LAB_BRIDGE $(ip -br -4 addr show "$LAB_BRIDGE" | awk '{print $3}')"
    else
        echo "bridge    $LAB_BRIDGE absent"
    fi
    if nft list table ip "$LAB_NFT_TABLE" >/dev/null 2>&1; then
        echo "nftables  table ip $LAB_NFT_TABLE present"
    else
        echo "nftables  table ip $LAB_NFT_TABLE absent"
    fi
    echo "base      $([[ -f $BASE/.bdf-lab-base ]] && echo "$BASE" || echo 'not built')"
    printf '%-10s %-15s %-8s %s\n' MACHINE ADDRESS PID STATE
    for name in "${LAB_MACHINES[@]}"; do
        pid=$(machine_pid "$name")
        state=stopped
        if [[ -n $pid ]]; then
            state=$(ssh "${SSH_OPTS[@]}" "root@${LAB_ADDR[$name]}" systemctl is-system-running 2>/dev/null) \
                || state=${state:-no-ssh}
        fi
        printf '%-10s %-15s %-8s %s\n' "$name" "${LAB_ADDR[$name]}" "${pid:--}" "$state"
    done
}

cmd_ssh() {
    (($# >= 1)) || die "usage: lab/lab.sh ssh NAME [COMMAND...]"
    load_topology
    local name=$1
    shift
    [[ -v LAB_ADDR[$name] ]] || die "no machine '$name' in $INVENTORY_NAME/hosts.yml (have: ${LAB_MACHINES[*]})"
    [[ -r $KEY ]] || die "no lab key $KEY: run lab/lab.sh up first (as root)"
    local tty=()
    [[ $# -eq 0 && -t 0 ]] && tty=(-t)
    exec ssh "${SSH_OPTS[@]}" "${tty[@]}" "root@${LAB_ADDR[$name]}" "$@"
}

cmd_poweroff() {
    (($# == 1)) || die "usage: lab/lab.sh poweroff NAME"
    need_root
    load_topology
    lock_state
    local name=$1 pid
    [[ -v LAB_ADDR[$name] ]] || die "no machine '$name' in $INVENTORY_NAME/hosts.yml (have: ${LAB_MACHINES[*]})"
    pid=$(machine_pid "$name")
    if [[ -z $pid ]]; then
        say "ok: $name is not running"
        return
    fi
    kill -KILL "$pid"
    while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
    reap_orphan "$name"   # the container outlives a killed systemd-nspawn: kill its init too
    rm -f "$RUN_DIR/$name.pid"
    changed "$name: powered off (systemd-nspawn pid $pid and its container killed)"
}

main() {
    local cmd=${1:-}
    (($#)) && shift
    case $cmd in
        up) cmd_up "$@" ;;
        down) cmd_down "$@" ;;
        status) cmd_status "$@" ;;
        ssh) cmd_ssh "$@" ;;
        poweroff) cmd_poweroff "$@" ;;
        deps) cmd_deps "$@" ;;
        -h|--help|help) usage ;;
        "") usage >&2; exit 2 ;;
        *) say "unknown command '$cmd'"; usage >&2; exit 2 ;;
    esac
}

main "$@"
