#!/bin/sh
# Turns a bare Debian 12 / Ubuntu 22.04 base into a lived-in server for SandTrap targets.
# Run once from the target Dockerfiles (final stage, as root); running it again is safe.
# Owns packages, users, site content and fake history; genlogs.py owns timestamps and logs.
# The runtime owns everything per container: hostname, /etc/hosts, /.dockerenv, session users.
set -eu

SRC=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
STATE=/var/tmp/.sandtrap-build          # phase markers for genlogs.py; removed at the end
TARGET_HOSTNAME=${TARGET_HOSTNAME:-web01}
export DEBIAN_FRONTEND=noninteractive
export LC_ALL=C

# shellcheck disable=SC1091  # provided by base-files at build time
. /etc/os-release
case "${ID:-}" in
    debian | ubuntu) ;;
    *) echo "build.sh: unsupported base (ID=${ID:-?}); need Debian or Ubuntu" >&2; exit 1 ;;
esac

# Everything an admin would have on a small Debian web server. --no-install-recommends keeps
# the image small; the list names what the recommends would have pulled in that we want.
PKGS_BASE="bash coreutils procps iproute2 net-tools iputils-ping traceroute wget curl nano
  vim-tiny less sudo openssh-client openssh-server openssh-sftp-server python3 cron rsyslog
  logrotate ca-certificates locales tzdata file man-db passwd login adduser psmisc lsof
  netcat-openbsd bash-completion gzip xz-utils unzip rsync"
PKGS_WEB="nginx python3-flask gunicorn"

log() { printf '==> %s\n' "$*"; }

# A phase is one stretch of the server's fake past. Every file and every dpkg/apt log line
# written while a phase is current is later moved by genlogs.py to DAYS days before the
# build, at HH:MM UTC. The sleep keeps phases apart at dpkg.log's one-second resolution.
phase() {
    sleep 1
    printf '%s %s %s %s\n' "$(date +%s.%N)" "$1" "$2" "$3" >>"$STATE/phases"
    log "phase $1 (${2} days ago, $3)"
}

# Options live in an APT_CONFIG file, not on the command line, so /var/log/apt/history.log
# records the short commands an admin would have typed.
write_apt_config() {
    cat >"$STATE/apt.conf" <<'EOF'
APT::Get::Assume-Yes "true";
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Dpkg::Options { "--force-confdef"; "--force-confold"; };
Dpkg::Use-Pty "false";
EOF
    APT_CONFIG="$STATE/apt.conf"
    export APT_CONFIG
}

# `apt` as an admin types it; its warning about scripted use is noise in the build log.
apt_cli() {
    if apt "$@" 2>"$STATE/apt.err"; then rc=0; else rc=$?; fi
    grep -v -e '^WARNING: apt does not have a stable CLI' -e '^$' "$STATE/apt.err" >&2 || true
    return "$rc"
}

# ---------------------------------------------------------------------------------------------
prepare() {
    rm -rf "$STATE"
    mkdir -p "$STATE"
    date +%s >"$STATE/build-epoch"
    write_apt_config
    # Keep maintainer scripts from starting daemons inside the build container.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\n# sandtrap-build\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 0755 /usr/sbin/policy-rc.d
    fi
    # Docker-image tweaks that no installed server has.
    rm -f /etc/apt/apt.conf.d/docker-* /etc/dpkg/dpkg.cfg.d/docker-* /run/systemd/container
    if [ "$ID" = ubuntu ]; then
        # ubuntu:* images are "minimized": docs stripped, /usr/bin/man replaced by a notice.
        rm -f /etc/dpkg/dpkg.cfg.d/excludes /etc/update-motd.d/60-unminimize \
            /usr/local/sbin/unminimize
        if dpkg-divert --list /usr/bin/man | grep -q man.REAL; then
            rm -f /usr/bin/man
            dpkg-divert --quiet --local --rename --remove /usr/bin/man
        fi
    fi
    # Timezone and locale answers before tzdata/locales are configured.
    ln -sf /usr/share/zoneinfo/Etc/UTC /etc/localtime
    echo Etc/UTC >/etc/timezone
    printf '%s\n' 'tzdata tzdata/Areas select Etc' 'tzdata tzdata/Zones/Etc select UTC' \
        'locales locales/default_environment_locale select en_US.UTF-8' \
        'locales locales/locales_to_be_generated multiselect en_US.UTF-8 UTF-8' |
        debconf-set-selections
}

debian_needs_sources() {
    [ "$ID" = debian ] && [ ! -e /etc/apt/sources.list.d/debian.sources ]
}

install_base() {
    apt-get update
    # shellcheck disable=SC2086  # word splitting of the package list is intended
    apt-get install $PKGS_BASE
    if [ "$ID" = ubuntu ]; then
        locale-gen en_US.UTF-8  # Ubuntu's locale-gen takes locales, not /etc/locale.gen
    else
        if grep -q '^# *en_US.UTF-8 UTF-8' /etc/locale.gen 2>/dev/null; then
            sed -i 's/^# *en_US.UTF-8 UTF-8/en_US.UTF-8 UTF-8/' /etc/locale.gen
        elif ! grep -q '^en_US.UTF-8 UTF-8' /etc/locale.gen 2>/dev/null; then
            echo 'en_US.UTF-8 UTF-8' >>/etc/locale.gen
        fi
        locale-gen
    fi
    update-locale LANG=en_US.UTF-8
    # rsyslogd runs in the sandbox (started when it is prepared), where /proc/kmsg is closed to
    # it: without this, its first lines in syslog would say that imklog failed.
    sed -i 's/^module(load="imklog")/#module(load="imklog")/' /etc/rsyslog.conf
    # The debootstrap base knows only "main"; add security and updates (the official debian:12
    # image's deb822 file already lists them). The build reaches only deb.debian.org and needs
    # no source indexes, so finish() swaps in the installer's file afterwards.
    if debian_needs_sources; then
        printf 'deb http://deb.debian.org/debian %s\n' 'bookworm main' \
            'bookworm-updates main' >/etc/apt/sources.list
        printf 'deb http://deb.debian.org/debian-security %s\n' 'bookworm-security main' \
            >>/etc/apt/sources.list
    fi
}

# adduser NAME UID "GECOS" GROUPS... ; only if NAME does not exist yet.
add_user() {
    name=$1 uid=$2 gecos=$3
    shift 3
    if ! id "$name" >/dev/null 2>&1; then
        # Keep the wanted uid unless the base already uses it (ubuntu:24.04 has "ubuntu" at 1000).
        if getent passwd "$uid" >/dev/null; then
            adduser --disabled-password --gecos "$gecos" --shell /bin/bash "$name" >/dev/null
        else
            adduser --disabled-password --gecos "$gecos" --uid "$uid" --shell /bin/bash \
                "$name" >/dev/null
        fi
    fi
    for g in "$@"; do
        if getent group "$g" >/dev/null; then usermod -aG "$g" "$name"; fi
    done
}

# A random password nobody knows: the shadow entry looks used, not locked.
set_random_password() {
    pw=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
    printf '%s:%s\n' "$1" "$pw" | chpasswd
}

# authorized_keys entry for a key whose private half is thrown away.
add_authorized_key() {
    user=$1 comment=$2
    home=$(getent passwd "$user" | cut -d: -f6)
    install -d -m 0700 -o "$user" -g "$user" "$home/.ssh"
    if ! grep -qs " $comment\$" "$home/.ssh/authorized_keys"; then
        rm -f "$STATE/key" "$STATE/key.pub"
        ssh-keygen -q -t ed25519 -N '' -C "$comment" -f "$STATE/key"
        cat "$STATE/key.pub" >>"$home/.ssh/authorized_keys"
        rm -f "$STATE/key" "$STATE/key.pub"
    fi
    chown "$user:$user" "$home/.ssh/authorized_keys"
    chmod 0600 "$home/.ssh/authorized_keys"
}

install_history() {
    user=$1
    home=$(getent passwd "$user" | cut -d: -f6)
    install -m 0600 -o "$user" -g "$(id -gn "$user")" "$SRC/files/history/$user" \
        "$home/.bash_history"
    printf 'SELECTED_EDITOR="/bin/nano"\n' >"$home/.selected_editor"
    chown "$user:$(id -gn "$user")" "$home/.selected_editor"
}

setup_admin() {
    # The account the installer created.
    add_user admin 1000 'Admin,,,' adm cdrom floppy sudo audio dip video plugdev users netdev
    set_random_password admin
    set_random_password root
    add_authorized_key admin 'admin@ops-laptop'
    install_history admin
    install_history root
    if [ "$ID" = debian ]; then
        # base-files' texts, in case a base image trimmed them.
        [ -s /etc/motd ] || cp /usr/share/base-files/motd /etc/motd
        [ -s /etc/issue ] || cp /usr/share/base-files/issue /etc/issue 2>/dev/null ||
            printf 'Debian GNU/Linux 12 \\n \\l\n\n' >/etc/issue
        [ -s /etc/issue.net ] || cp /usr/share/base-files/issue.net /etc/issue.net 2>/dev/null ||
            printf 'Debian GNU/Linux 12\n' >/etc/issue.net
    fi
    if [ "$ID" = ubuntu ]; then
        # Ubuntu's motd is assembled at login by pam_motd; keep a static copy of it.
        if [ ! -s /etc/motd ] && [ -d /etc/update-motd.d ]; then
            run-parts /etc/update-motd.d >/etc/motd 2>/dev/null || true
        fi
        : >/home/admin/.sudo_as_admin_successful
        chown admin:admin /home/admin/.sudo_as_admin_successful
    fi
}

setup_web() {
    # shellcheck disable=SC2086
    apt_cli install $PKGS_WEB
    add_user deploy 1001 'Deploy user,,,' sudo www-data adm
    set_random_password deploy
    add_authorized_key deploy 'deploy@ci-runner'
    add_authorized_key deploy 'admin@ops-laptop'
    install_history deploy

    # Static tree: site code, nginx site, unit file, scripts, cron, sudoers.
    cp -R "$SRC/files/rootfs/." /
    python3 "$SRC/seed_inventory.py" /srv/www/inventory
    find /srv/www/inventory -name __pycache__ -prune -exec rm -rf {} +
    chown -R deploy:www-data /srv/www/inventory
    find /srv/www/inventory -type d -exec chmod 0750 {} +
    find /srv/www/inventory -type f -exec chmod 0640 {} +
    chmod 0600 /srv/www/inventory/.env
    chown -R root:root /opt/scripts
    chmod 0755 /opt/scripts /opt/scripts/*.sh
    chmod 0644 /etc/cron.d/inventory /etc/systemd/system/inventory.service \
        /etc/nginx/sites-available/inventory
    chmod 0440 /etc/sudoers.d/deploy
    visudo -cq
    rm -f /etc/nginx/sites-enabled/default
    ln -sfn ../sites-available/inventory /etc/nginx/sites-enabled/inventory
    install -d -m 0750 -o deploy -g adm /var/log/inventory
    install -d -m 0750 -o deploy -g deploy /var/backups/inventory

    # deploy's own crontab, as `crontab -e` leaves it.
    install -d -m 1730 -o root -g crontab /var/spool/cron/crontabs
    {
        echo '# DO NOT EDIT THIS FILE - edit the master and reinstall.'
        installed=$(($(cat "$STATE/build-epoch") - 241 * 86400 - 5 * 3600))
        echo "# (/tmp/crontab.Xk3mQp/crontab installed on $(date -u -d "@$installed" '+%a %b %e %H:%M:%S %Y'))"
        # shellcheck disable=SC2016  # a literal RCS keyword
        echo '# (Cron version -- $Id: crontab.c,v 2.13 1994/01/17 03:20:37 vixie Exp $)'
        cat "$SRC/files/crontab.deploy"
    } >/var/spool/cron/crontabs/deploy
    chown deploy:crontab /var/spool/cron/crontabs/deploy
    chmod 0600 /var/spool/cron/crontabs/deploy
}

# Updates arrive in two batches months apart, as on a server someone looks after: first a
# targeted fix of the exposed services, later a full `apt upgrade`.
upgrade_batch() {
    apt-get update
    if [ "$1" = first ]; then
        apt-get -s upgrade | awk '/^Inst /{print $2}' |
            grep -xE 'openssh-(client|server|sftp-server)|openssl|libssl3|sudo|nginx(-common)?' \
                >"$STATE/batch" || true
        if [ -s "$STATE/batch" ]; then
            # shellcheck disable=SC2046  # one word per package
            apt_cli install --only-upgrade $(cat "$STATE/batch")
        fi
    else
        apt_cli upgrade
    fi
}

finish() {
    # Backups the daily dpkg cron job keeps.
    cp -p /var/lib/dpkg/status /var/backups/dpkg.status.0
    if [ -f /var/lib/apt/extended_states ]; then
        cp -p /var/lib/apt/extended_states /var/backups/apt.extended_states.0
    fi
    if debian_needs_sources; then
        # Keep the install-day mtime so genlogs.py dates the file with the install.
        stamp=$(stat -c %Y /etc/apt/sources.list)
        cp "$SRC/files/debian/sources.list" /etc/apt/sources.list
        touch -d "@$stamp" /etc/apt/sources.list
    fi
    apt-get clean
    rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/debconf/*-old \
        /var/log/bootstrap.log /root/.cache /root/.wget-hsts /var/tmp/*.tmp
    find /tmp -mindepth 1 -maxdepth 1 ! -path "$SRC" -exec rm -rf {} +
    mkdir -p /var/lib/apt/lists/partial
    if grep -qs '^# sandtrap-build$' /usr/sbin/policy-rc.d; then rm -f /usr/sbin/policy-rc.d; fi

    python3 "$SRC/genlogs.py" --state "$STATE" --hostname "$TARGET_HOSTNAME"
    vartmp=$(stat -c %Y /var/tmp)
    rm -rf "$STATE"
    touch -d "@$vartmp" /var/tmp
}

prepare
phase install 243 09:41
install_base
setup_admin
phase web 242 14:05
setup_web
phase updates-1 118 10:22
upgrade_batch first
phase updates-2 9 08:57
upgrade_batch rest
finish
log "done"
