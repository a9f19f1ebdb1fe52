#!/usr/bin/env bash
# The Debian package, for real: builds it with scripts/build-deb, lints it,
# installs it on this machine with dpkg -i, checks what it installed (files,
# conffile, group vpd, directories, vpd --version, man pages, bash
# completion, the installed vpd working with only the unit's capabilities),
# installs it again over itself (an upgrade: maintainer scripts, conffile, and
# an endpoint of the installed vpd kept across it), then purges it and checks
# that nothing of it is left.
#
#   usage: package_test.sh BUILD_DIR     (the .deb is built in BUILD_DIR/package)
#
# Needs root and no systemd as PID 1 (maintainer scripts only enable units).
# Refuses (skips) if a vpd package it did not install itself is on the
# machine. Safe to run again, also after an interrupted run.
# Environment: VPD_PACKAGE_TEST_WORKTREE=1 builds from the work tree instead
# of HEAD (scripts/build-deb --worktree); VPD_DEB_REV=REV builds REV;
# VPD_PACKAGE_TEST_DEB=FILE tests an already built .deb instead of building.
# Exit 0: passed. 1: a check failed. 2: usage. 77: skipped (CTest SKIP_RETURN_CODE).

set -u -o pipefail

if [[ $# -ne 1 ]]; then
  echo "usage: $0 BUILD_DIR" >&2
  exit 2
fi
build_dir=$(realpath -m "$1")
src_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
out=$build_dir/package
# Written after dpkg -i succeeds, removed after the purge: a vpd package on the
# machine with this marker is a leftover of an interrupted run, not an operator's.
marker=$out/installed-by-package-test

skip() {
  echo "SKIP: $*"
  exit 77
}
[[ $(id -u) -eq 0 ]] || skip "needs root (dpkg -i)"
for tool in dpkg-buildpackage dh lintian man groff systemd-sysusers systemd-tmpfiles unshare setpriv; do
  command -v "$tool" >/dev/null || skip "$tool is not installed (scripts/install-deps --tests)"
done
[[ -f /usr/share/bash-completion/bash_completion ]] || skip "bash-completion is not installed"
if [[ -d /run/systemd/system ]]; then
  skip "systemd is running: installing the package would start vpd.service on this machine"
fi
if dpkg-query -W -f='${Status}' vpd 2>/dev/null | grep -q 'installed' && [[ ! -f $marker ]]; then
  skip "a vpd package is installed on this machine and this test did not install it"
fi

failures=0
pass() { echo "  ok: $*"; }
fail() {
  echo "  FAIL: $*"
  failures=$((failures + 1))
}
section() { echo "== $*"; }
indent() { sed "s/^/    $1 /"; }

tmp=$(mktemp -d -t package-test.XXXXXX)
vpd_pid=""
netns=vpd-package-test
group_existed=0
getent group vpd >/dev/null && group_existed=1
[[ -f $out/group-created-by-package-test ]] && group_existed=0
ro_group_existed=0
getent group vpd-ro >/dev/null && ro_group_existed=1
[[ -f $out/ro-group-created-by-package-test ]] && ro_group_existed=0

# dpkg refuses to run while apt or another dpkg holds its lock; wait for it.
dpkg_locked() {
  local i out rc
  for i in $(seq 60); do
    out=$("$@" 2>&1)
    rc=$?
    if [[ $rc -ne 0 ]] && grep -qi 'lock' <<<"$out"; then
      sleep 5
      continue
    fi
    printf '%s\n' "$out"
    return $rc
  done
  printf '%s\n' "$out"
  return 1
}

purge() {
  dpkg-query -W -f='${Status}' vpd 2>/dev/null | grep -q 'installed\|config-files' || return 0
  dpkg_locked dpkg --purge vpd
}
cleanup() {
  [[ -n $vpd_pid ]] && kill "$vpd_pid" 2>/dev/null && wait "$vpd_pid" 2>/dev/null
  ip netns del "$netns" 2>/dev/null
  if [[ -f $marker ]]; then
    purge >/dev/null 2>&1 && rm -f "$marker"
  fi
  # The package keeps group vpd on purge (Debian's practice); the test leaves
  # the machine as it found it.
  if [[ $group_existed -eq 0 ]] && getent group vpd >/dev/null; then
    groupdel vpd 2>/dev/null
  fi
  if [[ $ro_group_existed -eq 0 ]] && getent group vpd-ro >/dev/null; then
    groupdel vpd-ro 2>/dev/null
  fi
  rm -f "$out/group-created-by-package-test" "$out/ro-group-created-by-package-test"
  rm -rf -- "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# Leftovers of an interrupted run go first.
ip netns del "$netns" 2>/dev/null
if [[ -f $marker ]]; then
  echo "(purging the vpd package an interrupted run left installed)"
  purge | indent '|'
  rm -f "$marker"
fi

# ---------------------------------------------------------------------------
section "build: scripts/build-deb"
mkdir -p "$out"
build_args=()
[[ ${VPD_PACKAGE_TEST_WORKTREE:-0} == 1 ]] && build_args+=(--worktree)
start=$SECONDS
if [[ -n ${VPD_PACKAGE_TEST_DEB:-} ]]; then
  deb=$(realpath "$VPD_PACKAGE_TEST_DEB")
  pass "testing the given $deb (VPD_PACKAGE_TEST_DEB)"
elif VPD_DEB_NO_LINT=1 "$src_dir/scripts/build-deb" "${build_args[@]}" "$out" >"$tmp/build.log" 2>&1; then
  deb=$(tail -n 1 "$tmp/build.log")
  pass "built $(basename "$deb") in $((SECONDS - start)) s"
else
  fail "scripts/build-deb failed; the end of its output:"
  tail -n 40 "$tmp/build.log" | indent '|'
  echo "FAIL: no package to test"
  exit 1
fi
version=$(dpkg-deb -f "$deb" Version)

# ---------------------------------------------------------------------------
section "lintian"
# Errors fail; warnings and notes (printed) do not.
lint=$(lintian --fail-on error --info "$deb" 2>&1)
rc=$?
lint=$(grep -v 'running with root privileges' <<<"$lint")
[[ -n $lint ]] && indent '|' <<<"$lint"
if [[ $rc -eq 0 ]] && ! grep -q '^E:' <<<"$lint"; then
  pass "lintian: no errors"
else
  fail "lintian reports errors (exit $rc)"
fi

section "package metadata"
depends=$(dpkg-deb -f "$deb" Depends)
for dep in libnl-3-200 libnl-route-3-200 libsystemd0 systemd-sysusers; do
  if grep -q "$dep" <<<"$depends"; then
    pass "Depends names $dep"
  else
    fail "Depends lacks $dep: $depends"
  fi
done

# ---------------------------------------------------------------------------
section "dpkg -i"
if out_i=$(dpkg_locked dpkg -i "$deb"); then
  touch "$marker"
  [[ $group_existed -eq 0 ]] && touch "$out/group-created-by-package-test"
  [[ $ro_group_existed -eq 0 ]] && touch "$out/ro-group-created-by-package-test"
  pass "dpkg -i $(basename "$deb")"
else
  fail "dpkg -i failed"
  indent '|' <<<"$out_i"
  exit 1
fi
indent '|' <<<"$out_i"

dpkg -L vpd | sort >"$tmp/files"
for f in /usr/sbin/vpd /usr/bin/vpctl /lib/systemd/system/vpd.service \
  /lib/systemd/system/vpd.socket /lib/systemd/system/vpd-ro.socket \
  /lib/systemd/system/vpd-metrics.socket /lib/systemd/system/vpd-metrics@.service \
  /usr/lib/sysusers.d/vpd.conf /usr/lib/tmpfiles.d/vpd.conf \
  /etc/vpd/vpd.conf /usr/share/man/man8/vpd.8.gz /usr/share/man/man8/vpctl.8.gz \
  /usr/share/man/man5/vpd.conf.5.gz /usr/share/bash-completion/completions/vpctl \
  /usr/share/doc/vpd/copyright; do
  if grep -qx "$f" "$tmp/files" && [[ -f $f ]]; then
    pass "installed $f"
  else
    fail "$f is not installed"
  fi
done
for f in /usr/sbin/vpd /usr/bin/vpctl; do
  [[ -x $f ]] && pass "$f is executable" || fail "$f is not executable"
done
if dpkg-query -W -f='${Conffiles}\n' vpd | grep -q '^ /etc/vpd/vpd.conf '; then
  pass "/etc/vpd/vpd.conf is a conffile"
else
  fail "/etc/vpd/vpd.conf is not a conffile"
fi
if cmp -s /etc/vpd/vpd.conf "$src_dir/systemd/vpd.conf"; then
  pass "/etc/vpd/vpd.conf is systemd/vpd.conf"
else
  fail "/etc/vpd/vpd.conf differs from systemd/vpd.conf"
fi

section "group vpd and directories (postinst: systemd-sysusers, systemd-tmpfiles)"
gid=$(getent group vpd | cut -d: -f3)
if [[ $gid =~ ^[0-9]+$ && $gid -gt 0 && $gid -lt 1000 ]]; then
  pass "group vpd exists with system gid $gid"
else
  fail "no system group vpd (got '$gid')"
fi
ro_gid=$(getent group vpd-ro | cut -d: -f3)
if [[ $ro_gid =~ ^[0-9]+$ && $ro_gid -gt 0 && $ro_gid -lt 1000 && $ro_gid != "$gid" ]]; then
  pass "group vpd-ro exists with system gid $ro_gid"
else
  fail "no system group vpd-ro of its own (got '$ro_gid')"
fi
if getent passwd vpd >/dev/null; then
  fail "a user vpd exists; the package only wants the group"
else
  pass "no user vpd"
fi
expect_dir() { # PATH MODE
  local got
  got=$(stat -c '%F %a %U:%G' "$1" 2>/dev/null)
  if [[ $got == "directory $2 root:root" ]]; then
    pass "$1: directory $2 root:root"
  else
    fail "$1: got '${got:-missing}', want 'directory $2 root:root'"
  fi
}
expect_dir /run/vpd 711
expect_dir /var/lib/vpd 700
expect_dir /etc/vpd 755
enabled=$(find /etc/systemd/system -name 'vpd.*' -o -name 'vpd-ro.*' 2>/dev/null | sort)
if grep -q 'multi-user.target.wants/vpd.service' <<<"$enabled" &&
  grep -q 'sockets.target.wants/vpd.socket' <<<"$enabled" &&
  grep -q 'sockets.target.wants/vpd-ro.socket' <<<"$enabled"; then
  pass "vpd.service, vpd.socket and vpd-ro.socket are enabled (symlinks in /etc/systemd/system)"
else
  fail "units not enabled: '$enabled'"
fi
if [[ -z $(find /etc/systemd/system -name 'vpd-metrics*' 2>/dev/null) ]]; then
  pass "vpd-metrics.socket is installed but not enabled (metrics over HTTP are opt-in)"
else
  fail "vpd-metrics.socket is enabled by the package; it must stay off until the operator enables it"
fi

section "the installed programs"
got=$(/usr/sbin/vpd --version 2>&1)
if [[ $got == "vpd $version "* ]]; then
  pass "vpd --version: $got"
else
  fail "vpd --version printed '$got', want 'vpd $version ...'"
fi
got=$(/usr/bin/vpctl --version 2>&1)
[[ $got == "vpctl $version" ]] && pass "vpctl --version: $got" || fail "vpctl --version: '$got'"
mkdir -p "$tmp/check-run" "$tmp/check-state"
if got=$(/usr/sbin/vpd --check-config --config /etc/vpd/vpd.conf \
  --runtime-dir "$tmp/check-run" --state-dir "$tmp/check-state" 2>&1); then
  pass "vpd --check-config accepts /etc/vpd/vpd.conf: $got"
else
  fail "vpd --check-config rejects /etc/vpd/vpd.conf: $got"
fi
if systemd-analyze verify --man=no /lib/systemd/system/vpd.socket \
  /lib/systemd/system/vpd-ro.socket /lib/systemd/system/vpd.service \
  /lib/systemd/system/vpd-metrics.socket /lib/systemd/system/vpd-metrics@.service \
  >"$tmp/verify" 2>&1 && ! grep -qi vpd "$tmp/verify"; then
  pass "systemd-analyze verify on the installed units"
else
  fail "systemd-analyze verify on the installed units:"
  indent '|' <"$tmp/verify"
fi

section "man pages: man --warnings -l"
for page in /usr/share/man/man8/vpd.8.gz /usr/share/man/man8/vpctl.8.gz \
  /usr/share/man/man5/vpd.conf.5.gz; do
  # As lintian checks: any line on stderr is a warning of groff or man.
  warnings=$(LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -E UTF-8 -l -Tutf8 -Z "$page" 2>&1 >/dev/null)
  text=$(LC_ALL=C.UTF-8 MANWIDTH=80 man -l "$page" 2>/dev/null)
  name=$(basename "$page" .gz)
  if [[ -z $warnings ]] && grep -q '^NAME' <<<"$text" && grep -q '^SEE ALSO' <<<"$text"; then
    pass "$name renders without warnings ($(wc -l <<<"$text") lines)"
  else
    fail "$name: warnings or missing sections"
    indent '|' <<<"$warnings"
  fi
done
# Each man page names what the program's --help names. (Decompressed first:
# zcat | grep -q fails under pipefail when grep stops reading early.)
before=$failures
vpd_man=$(zcat /usr/share/man/man8/vpd.8.gz | sed 's/\\-/-/g')
vpctl_man=$(zcat /usr/share/man/man8/vpctl.8.gz | sed 's/\\-/-/g')
for opt in $(/usr/sbin/vpd --help | grep -o -- '--[a-z-]*' | sort -u); do
  grep -q -- "$opt" <<<"$vpd_man" || fail "vpd(8) does not mention $opt (in vpd --help)"
done
for word in list version create destroy stats qemu-args monitor --count --timeout --socket --json VPD_SOCKET; do
  grep -q -- "$word" <<<"$vpctl_man" || fail "vpctl(8) does not mention $word (in vpctl --help)"
done
for key in $(/usr/bin/vpctl --help | grep -o '[a-z-]*=' | sort -u); do
  grep -q -- "$key" <<<"$vpctl_man" || fail "vpctl(8) does not mention $key (in vpctl --help)"
done
[[ $failures -eq $before ]] && pass "vpd(8) and vpctl(8) mention every option, command and key of --help"

# ---------------------------------------------------------------------------
section "the installed vpd with the unit's capabilities, and bash completion"
# CapabilityBoundingSet= of the installed unit, as setpriv wants it.
caps=$(sed -n 's/^CapabilityBoundingSet=//p' /lib/systemd/system/vpd.service | tail -n 1 |
  tr 'A-Z' 'a-z' | sed 's/cap_/+/g; s/ /,/g')
echo "  capabilities of vpd.service: $caps"
run=$tmp/run
mkdir -p "$run" "$tmp/state"
# A private network namespace: the TAP devices vanish with it.
unshare -n -- setpriv --bounding-set "-all,$caps" --inh-caps -all -- \
  /usr/sbin/vpd --config /dev/null --runtime-dir "$run" --state-dir "$tmp/state" \
  >"$tmp/vpd.log" 2>&1 &
vpd_pid=$!
for _ in $(seq 100); do
  [[ -S $run/control.sock ]] && /usr/bin/vpctl --socket "$run/control.sock" list >/dev/null 2>&1 && break
  sleep 0.1
done
vpctl_() { /usr/bin/vpctl --socket "$run/control.sock" "$@"; }
# The default bind socket group is vpd (created above): vpd chowns it.
if got=$(vpctl_ vp0 create bind="$run/vp0.sock" priority=5 up 2>&1); then
  pass "vpctl vp0 create bind=... priority=5 up, with only $caps"
else
  fail "vpctl vp0 create with the unit's capabilities: $got"
  indent '|' <"$tmp/vpd.log"
fi
sock=$(stat -c '%a %G' "$run/vp0.sock" 2>/dev/null)
[[ $sock == "660 vpd" ]] && pass "bind socket vp0.sock is 0660 group vpd" ||
  fail "bind socket vp0.sock: '$sock', want '660 vpd'"
vpctl_ vp1 create >/dev/null 2>&1 || fail "vpctl vp1 create"
# The read-only control socket: group vpd-ro (created above), changes refused.
sock=$(stat -c '%a %U:%G' "$run/control-ro.sock" 2>/dev/null)
[[ $sock == "660 root:vpd-ro" ]] && pass "control-ro.sock is 0660 root:vpd-ro" ||
  fail "control-ro.sock: '$sock', want '660 root:vpd-ro'"
got=$(/usr/bin/vpctl --socket "$run/control-ro.sock" vp1 destroy 2>&1)
if [[ $? -eq 1 && $got == *"(permission)"* ]] && vpctl_ vp1 >/dev/null 2>&1; then
  pass "control-ro.sock refuses vpctl vp1 destroy, and vp1 stays"
else
  fail "vpctl vp1 destroy through control-ro.sock: '$got'"
fi
if grep -q 'SCHED_FIFO priority 5' "$tmp/vpd.log"; then
  pass "priority=5 put the data-path worker in SCHED_FIFO"
else
  fail "priority=5 did not set SCHED_FIFO:"
  indent '|' <"$tmp/vpd.log"
fi

# Completion as bash-completion loads it on demand, driven like readline.
cat >"$tmp/complete.bash" <<'BASH'
source /usr/share/bash-completion/bash_completion
__load_completion vpctl || exit 3
complete -p vpctl >/dev/null || exit 4
compopt() { :; } # only valid inside a real completion
comp() {
  COMP_WORDS=("$@")
  COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
  COMP_LINE="$*"
  COMP_POINT=${#COMP_LINE}
  COMPREPLY=()
  _vpctl vpctl "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]}"
  echo "${COMPREPLY[*]}"
}
BASH
complete_() { bash -c "source '$tmp/complete.bash' && comp $*" 2>&1; }
expect_completion() { # WANT WORDS...
  local want=$1 got
  shift
  got=$(complete_ "$@")
  if [[ " $got " == *" $want "* ]]; then
    pass "completion of '$*' offers $want"
  else
    fail "completion of '$*' gave '$got', want $want among them"
  fi
}
expect_completion list vpctl "''"
expect_completion vp0 vpctl --socket "$run/control.sock" "''"
expect_completion vp1 vpctl --socket "$run/control.sock" "vp"
expect_completion qemu-args vpctl vp0 "''"
expect_completion transport= vpctl vp0 tr
expect_completion vhost-user vpctl vp0 transport=
expect_completion -rxcsum6 vpctl vp0 -rx
expect_completion name= vpctl create na

kill "$vpd_pid" 2>/dev/null
wait "$vpd_pid" 2>/dev/null
vpd_pid=""

# ---------------------------------------------------------------------------
section "dpkg -i again over the installed package (an upgrade), endpoints kept"
# vpd as the service runs it (default config, /run/vpd, /var/lib/vpd, the unit's
# capabilities), but in a network namespace of the test's own; stopped before the
# upgrade and started after it, as systemd would.
ip netns add "$netns" || fail "ip netns add $netns"
ip -n "$netns" link add vpbr0 type bridge && ip -n "$netns" link set vpbr0 up
start_service_vpd() {
  ip netns exec "$netns" setpriv --bounding-set "-all,$caps" --inh-caps -all -- \
    /usr/sbin/vpd >>"$tmp/service-vpd.log" 2>&1 &
  vpd_pid=$!
  for _ in $(seq 100); do
    /usr/bin/vpctl list >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  fail "the installed vpd did not answer on /run/vpd/control.sock"
  indent '|' <"$tmp/service-vpd.log"
  return 1
}
stop_service_vpd() {
  kill "$vpd_pid" 2>/dev/null
  wait "$vpd_pid" 2>/dev/null
  vpd_pid=""
}
mac_of_vp0() {
  /usr/bin/vpctl --json vp0 2>/dev/null | sed -n 's/^ *"mac": *"\([^"]*\)".*/\1/p' | head -n 1
}
start_service_vpd
/usr/bin/vpctl vp0 create bridge=vpbr0 address=10.9.8.1/24 up >/dev/null 2>&1 ||
  fail "vpctl vp0 create bridge=vpbr0 address=10.9.8.1/24 up"
mac_before=$(mac_of_vp0)
stop_service_vpd

echo "# changed by package_test.sh" >>/etc/vpd/vpd.conf
gid_before=$gid
if out_i=$(DEBIAN_FRONTEND=noninteractive dpkg_locked dpkg -i "$deb"); then
  pass "dpkg -i over itself"
else
  fail "dpkg -i over itself failed"
  indent '|' <<<"$out_i"
fi
start_service_vpd
mac_after=$(mac_of_vp0)
if [[ -n $mac_before && $mac_after == "$mac_before" ]]; then
  pass "vp0 is back after the upgrade with the same MAC ($mac_after)"
else
  fail "vp0 after the upgrade: MAC '$mac_after', before '$mac_before'"
fi
link=$(ip -n "$netns" -o link show vp0 2>&1)
addr=$(ip -n "$netns" -o addr show dev vp0 2>&1)
if [[ $link == *"master vpbr0"* && $addr == *"10.9.8.1/24"* ]]; then
  pass "vp0 is still a port of vpbr0 with 10.9.8.1/24"
else
  fail "vp0 after the upgrade: '$link' '$addr'"
fi
stop_service_vpd
grep -q '^# changed by package_test.sh' /etc/vpd/vpd.conf &&
  pass "the changed conffile /etc/vpd/vpd.conf is kept" ||
  fail "the changed /etc/vpd/vpd.conf was overwritten"
[[ $(getent group vpd | cut -d: -f3) == "$gid_before" ]] && pass "group vpd keeps gid $gid_before" ||
  fail "group vpd changed gid"

# ---------------------------------------------------------------------------
section "dpkg --purge"
if out_p=$(purge); then
  pass "dpkg --purge vpd"
  rm -f "$marker"
else
  fail "dpkg --purge vpd failed"
  indent '|' <<<"$out_p"
fi
if dpkg-query -W -f='${Status}' vpd 2>/dev/null | grep -q 'installed\|config-files'; then
  fail "dpkg still knows vpd: $(dpkg-query -W -f='${Status}' vpd)"
else
  pass "dpkg no longer knows vpd"
fi
left=()
while read -r f; do
  [[ -z $f || -d $f ]] && continue
  [[ -e $f ]] && left+=("$f")
done <"$tmp/files"
for d in /etc/vpd /var/lib/vpd /run/vpd /usr/share/doc/vpd; do
  [[ -e $d ]] && left+=("$d")
done
while read -r f; do left+=("$f"); done < <(find /etc/systemd/system /var/lib/systemd/deb-systemd-helper-enabled \
  -name 'vpd.*' -o -name 'vpd-ro.*' 2>/dev/null)
if [[ ${#left[@]} -eq 0 ]]; then
  pass "nothing of the package is left (files, /etc/vpd, /var/lib/vpd, /run/vpd, unit symlinks)"
else
  fail "left behind after purge: ${left[*]}"
fi
if getent group vpd >/dev/null && getent group vpd-ro >/dev/null; then
  pass "groups vpd and vpd-ro are kept on purge, as Debian keeps system groups (the test removes them)"
fi

echo
if [[ $failures -eq 0 ]]; then
  echo "PASS: package (${SECONDS} s)"
  exit 0
fi
echo "FAIL: $failures check(s) failed"
exit 1
