#!/usr/bin/env bash
# Checks the files in systemd/ with the systemd tools of this machine; needs no
# running systemd (PID 1 may be anything) and touches nothing outside a
# temporary directory.
#
#   usage: systemd_units_test.sh BUILD_DIR      (vpd is BUILD_DIR/daemon/vpd)
#
# Exit 0: all checks passed. 1: a check failed. 2: usage or missing binary.
# 77: the systemd tools are not installed (CTest: SKIP_RETURN_CODE 77).

set -u -o pipefail

if [[ $# -ne 1 ]]; then
  echo "usage: $0 BUILD_DIR" >&2
  exit 2
fi
build_dir=$1
src_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
units_src=$src_dir/systemd

vpd_bin=$build_dir/daemon/vpd
if [[ ! -x $vpd_bin ]]; then
  echo "FAIL: no executable vpd at $vpd_bin (build it first)" >&2
  exit 2
fi
vpd_bin=$(realpath "$vpd_bin")

for tool in systemd-analyze systemd-sysusers systemd-tmpfiles; do
  if ! command -v "$tool" >/dev/null; then
    echo "SKIP: $tool is not installed"
    exit 77
  fi
done

failures=0
pass() { echo "  ok: $*"; }
fail() {
  echo "  FAIL: $*"
  failures=$((failures + 1))
}
section() { echo "== $*"; }
# Indents stdin under a check, each line marked with $1.
indent() { sed "s/^/    $1 /"; }

tmp=$(mktemp -d -t units-test.XXXXXX)
trap 'rm -rf -- "$tmp"' EXIT

echo "systemd: $(systemd-analyze --version | head -n 1)"
echo "vpd binary: $vpd_bin"
echo "sources: $units_src"

# Value of the last KEY= line of a unit file (later assignments win).
unit_value() { sed -n "s/^$2=//p" "$1" | tail -n 1; }

# ---------------------------------------------------------------------------
section "systemd-analyze verify on vpd.service, vpd.socket and vpd-ro.socket"

units=$tmp/units
mkdir -p "$units"
cp "$units_src/vpd.service" "$units_src/vpd.socket" "$units_src/vpd-ro.socket" "$units/"
# Run the built binary instead of the installed one.
sed -i "s|/usr/sbin/vpd|$vpd_bin|g" "$units/vpd.service"
if grep -qx "ExecStart=$vpd_bin" "$units/vpd.service"; then
  pass "ExecStart rewritten to $vpd_bin"
else
  fail "could not rewrite ExecStart= in vpd.service"
fi

verify_opts=(--man=no)
# --recursive-errors=no: the exit status reflects our units only, not
# warnings in units they depend on (network.target, sockets.target...).
if systemd-analyze verify --help 2>&1 | grep -q -- --recursive-errors; then
  verify_opts+=(--recursive-errors=no)
fi

# Runs systemd-analyze verify on the given unit files. Prints the lines about
# vpd units and returns non-zero if there are any or the exit status is bad.
verify_units() {
  local out rc ours others
  out=$(systemd-analyze verify "${verify_opts[@]}" "$@" 2>&1)
  rc=$?
  # Other units on the machine may draw warnings; only ours count.
  ours=$(grep -i 'vpd' <<<"$out")
  others=$(grep -civ 'vpd' <<<"$out")
  if [[ -n $ours ]]; then
    indent '|' <<<"$ours"
  fi
  if [[ $others -gt 0 && -n $out ]]; then
    echo "    ($others line(s) about other units ignored)"
  fi
  [[ $rc -eq 0 && -z $ours ]]
}

if verify_units "$units/vpd.socket" "$units/vpd-ro.socket" "$units/vpd.service"; then
  pass "systemd-analyze verify: no warnings or errors about vpd units"
else
  fail "systemd-analyze verify reported problems in vpd units"
fi

# Negative control: the filter above must notice a broken vpd unit, or the
# check proves nothing.
broken=$tmp/broken
mkdir -p "$broken"
cp "$units/vpd.service" "$units/vpd.socket" "$units/vpd-ro.socket" "$broken/"
sed -i 's/^Type=notify$/Type=notify\nNoSuchSetting=1/' "$broken/vpd.service"
if verify_units "$broken/vpd.socket" "$broken/vpd-ro.socket" "$broken/vpd.service" >/dev/null; then
  fail "negative control: verify accepted a vpd.service with an unknown setting"
else
  pass "negative control: an unknown setting in vpd.service is reported"
fi

# ---------------------------------------------------------------------------
section "unit settings that must not drift"

service=$units_src/vpd.service
socket=$units_src/vpd.socket
ro_socket=$units_src/vpd-ro.socket
tmpfiles=$units_src/vpd.tmpfiles

expect_setting() { # FILE KEY VALUE
  local got
  got=$(unit_value "$1" "$2")
  if [[ $got == "$3" ]]; then
    pass "$(basename "$1"): $2=$3"
  else
    fail "$(basename "$1"): $2= is '$got', want '$3'"
  fi
}
expect_setting "$service" Type notify
expect_setting "$service" NotifyAccess main
expect_setting "$service" ExecStart /usr/sbin/vpd
expect_setting "$service" RuntimeDirectory vpd
expect_setting "$service" RuntimeDirectoryPreserve yes
expect_setting "$service" StateDirectory vpd
expect_setting "$service" DeviceAllow "/dev/net/tun rw"
expect_setting "$service" RestrictAddressFamilies "AF_UNIX AF_NETLINK"
expect_setting "$socket" ListenStream /run/vpd/control.sock
expect_setting "$socket" SocketMode 0660
expect_setting "$socket" SocketGroup vpd
# vpd tells the full and the read-only control socket apart by these names.
expect_setting "$socket" FileDescriptorName control
expect_setting "$ro_socket" ListenStream /run/vpd/control-ro.sock
expect_setting "$ro_socket" FileDescriptorName control-ro
expect_setting "$ro_socket" SocketMode 0660
expect_setting "$ro_socket" SocketGroup vpd-ro
expect_setting "$ro_socket" Service vpd.service
expect_setting "$service" Sockets "vpd.socket vpd-ro.socket"

# These would hide /dev/net/tun, isolate the TAPs in a private network
# namespace, or take CAP_NET_ADMIN away from the init user namespace.
for key in PrivateDevices PrivateNetwork PrivateUsers DynamicUser; do
  value=$(unit_value "$service" "$key")
  if [[ -z $value || $value == no ]]; then
    pass "vpd.service: $key= not enabled"
  else
    fail "vpd.service: $key=$value breaks vpd"
  fi
done

# systemd re-applies RuntimeDirectoryMode=/StateDirectoryMode= at every start
# and vpd.socket's DirectoryMode= when it creates /run/vpd; tmpfiles.d applies
# its own mode at boot. They must agree or they fight over the directory.
tmpfiles_mode() { awk -v p="$1" '$1 !~ /^#/ && $2 == p { print $3 }' "$tmpfiles"; }
expect_same_mode() { # WHAT UNIT_MODE TMPFILES_PATH
  local t
  t=$(tmpfiles_mode "$3")
  if [[ -n $2 && $2 == "$t" ]]; then
    pass "$1 ($2) matches tmpfiles $3 ($t)"
  else
    fail "$1 ('$2') differs from tmpfiles $3 ('$t')"
  fi
}
expect_same_mode "vpd.service RuntimeDirectoryMode" "$(unit_value "$service" RuntimeDirectoryMode)" /run/vpd
expect_same_mode "vpd.service StateDirectoryMode" "$(unit_value "$service" StateDirectoryMode)" /var/lib/vpd
expect_same_mode "vpd.socket DirectoryMode" "$(unit_value "$socket" DirectoryMode)" /run/vpd
expect_same_mode "vpd-ro.socket DirectoryMode" "$(unit_value "$ro_socket" DirectoryMode)" /run/vpd
# ConfigurationDirectoryMode= defaults to 0755 (systemd only warns about it).
config_mode=$(unit_value "$service" ConfigurationDirectoryMode)
expect_same_mode "vpd.service ConfigurationDirectoryMode" "${config_mode:-0755}" /etc/vpd

# The bind sockets in /run/vpd must survive: no 'D'/'R' line (emptied at boot
# or on --remove) and no age (systemd-tmpfiles-clean would delete them).
run_line=$(awk '$1 !~ /^#/ && $2 == "/run/vpd"' "$tmpfiles")
read -r rtype _ _ _ _ rage <<<"$run_line"
if [[ $rtype == d && ${rage:--} == - ]]; then
  pass "tmpfiles: /run/vpd is 'd' without an age (never cleaned)"
else
  fail "tmpfiles: /run/vpd line '$run_line' would clean bind sockets"
fi

# ---------------------------------------------------------------------------
section "systemd-sysusers --root with vpd.sysusers"

root=$tmp/root
mkdir -p "$root/etc" "$root/usr/lib/sysusers.d" "$root/usr/lib/tmpfiles.d"
# Installed under these names by CMake (lib/sysusers.d/vpd.conf ...).
cp "$units_src/vpd.sysusers" "$root/usr/lib/sysusers.d/vpd.conf"
cp "$units_src/vpd.tmpfiles" "$root/usr/lib/tmpfiles.d/vpd.conf"

if out=$(systemd-sysusers --root="$root" 2>&1); then
  pass "systemd-sysusers ran"
else
  fail "systemd-sysusers failed"
fi
[[ -n ${out:-} ]] && indent '|' <<<"$out"
group_line=$(grep '^vpd:' "$root/etc/group" 2>/dev/null)
gid=$(cut -d: -f3 <<<"$group_line")
if [[ $gid =~ ^[0-9]+$ && $gid -gt 0 && $gid -lt 1000 ]]; then
  pass "group vpd created in $root/etc/group with system gid $gid"
else
  fail "no system group vpd in $root/etc/group (got '$group_line')"
fi
ro_gid=$(grep '^vpd-ro:' "$root/etc/group" 2>/dev/null | cut -d: -f3)
if [[ $ro_gid =~ ^[0-9]+$ && $ro_gid -gt 0 && $ro_gid -lt 1000 && $ro_gid != "$gid" ]]; then
  pass "group vpd-ro created in $root/etc/group with system gid $ro_gid"
else
  fail "no system group vpd-ro of its own in $root/etc/group (got '$ro_gid')"
fi
if grep -q '^vpd:' "$root/etc/passwd" 2>/dev/null; then
  fail "sysusers also created a user vpd; only the group is wanted"
else
  pass "no user vpd created (vpd runs as root)"
fi
systemd-sysusers --root="$root" >/dev/null 2>&1
gid2=$(grep '^vpd:' "$root/etc/group" 2>/dev/null | cut -d: -f3)
if [[ -n $gid && $gid2 == "$gid" ]]; then
  pass "second run keeps gid $gid"
else
  fail "second run changed gid $gid to '$gid2'"
fi

# ---------------------------------------------------------------------------
section "systemd-tmpfiles --root --create with vpd.tmpfiles"

if [[ $(id -u) -ne 0 ]]; then
  echo "  (not root: tmpfiles cannot chown to root; skipping this section)"
else
  if out=$(systemd-tmpfiles --root="$root" --create 2>&1); then
    pass "systemd-tmpfiles --create ran"
  else
    fail "systemd-tmpfiles --create failed"
  fi
  [[ -n ${out:-} ]] && indent '|' <<<"$out"

  expect_dir() { # PATH MODE UID GID
    local got
    got=$(stat -c '%F %a %u %g' "$root$1" 2>/dev/null)
    if [[ $got == "directory $2 $3 $4" ]]; then
      pass "$1: directory mode $2 owner $3:$4"
    else
      fail "$1: got '${got:-missing}', want 'directory $2 $3 $4'"
    fi
  }
  expect_dir /run/vpd 711 0 0
  expect_dir /var/lib/vpd 700 0 0
  expect_dir /etc/vpd 755 0 0

  # A boot-time run (--create --remove --boot) and a cleaning run must leave
  # a bind socket in /run/vpd alone.
  python3 - "$root/run/vpd/vp0.sock" <<'EOF' 2>/dev/null || mkfifo "$root/run/vpd/vp0.sock"
import socket, sys
socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).bind(sys.argv[1])
EOF
  systemd-tmpfiles --root="$root" --create --remove --boot >/dev/null 2>&1
  systemd-tmpfiles --root="$root" --clean >/dev/null 2>&1
  if [[ -e $root/run/vpd/vp0.sock ]]; then
    pass "/run/vpd/vp0.sock survives --remove --boot and --clean"
  else
    fail "/run/vpd/vp0.sock was removed by systemd-tmpfiles"
  fi
  expect_dir /run/vpd 711 0 0
fi

# ---------------------------------------------------------------------------
section "example vpd.conf"

conf=$units_src/vpd.conf
if grep -vqE '^[[:space:]]*(#|$)' "$conf"; then
  fail "vpd.conf declares something; a default install must declare no endpoints:"
  grep -nvE '^[[:space:]]*(#|$)' "$conf" | indent '|'
else
  pass "vpd.conf has only comments and blank lines"
fi

# --check-config must accept the file as shipped and with every example line
# ('#' directly followed by text) uncommented.
vpd_check() { # CONFIG
  "$vpd_bin" --check-config --config "$1" \
    --runtime-dir "$tmp/check-run" --state-dir "$tmp/check-state" 2>&1
}
mkdir -p "$tmp/check-run" "$tmp/check-state"
if out=$(vpd_check "$conf"); then
  pass "vpd --check-config accepts vpd.conf as shipped"
else
  fail "vpd --check-config rejects vpd.conf as shipped"
  indent '|' <<<"$out"
fi
sed -n 's/^#\([^[:space:]#]\)/\1/p' "$conf" >"$tmp/examples.conf"
n_examples=$(wc -l <"$tmp/examples.conf")
if [[ $n_examples -eq 0 ]]; then
  fail "vpd.conf has no example endpoint lines"
elif out=$(vpd_check "$tmp/examples.conf"); then
  pass "vpd --check-config accepts the $n_examples example lines uncommented"
else
  fail "vpd --check-config rejects the uncommented examples:"
  indent '|' <"$tmp/examples.conf"
  indent '>' <<<"$out"
fi

# ---------------------------------------------------------------------------
section "systemd-analyze security: exposure at most the bound in docs/SERVICE.md"

# The recorded score: a change to vpd.service that raises it must also update
# docs/SERVICE.md (and say why there), a change that lowers it should too.
service_doc=$src_dir/docs/SERVICE.md
bound=$(sed -n 's/.*<!-- exposure-bound: \([0-9.]*\) -->.*/\1/p' "$service_doc" 2>/dev/null | head -n 1)
if systemd-analyze security --help 2>&1 | grep -q -- '--offline'; then
  out=$(LC_ALL=C.UTF-8 systemd-analyze security --offline=true --no-pager "$units/vpd.service" 2>&1)
  rc=$?
  if [[ $rc -ne 0 ]]; then
    fail "systemd-analyze security --offline failed (exit $rc)"
    indent '|' <<<"$out"
  else
    echo "  settings counted as exposure:"
    # ✗ in a UTF-8 locale, - otherwise.
    grep -E '^(✗|- )' <<<"$out" | indent ''
    score=$(sed -n 's/.*Overall exposure level for vpd.service: \([0-9.]*\).*/\1/p' <<<"$out")
    if [[ -z $bound ]]; then
      fail "no '<!-- exposure-bound: N -->' in docs/SERVICE.md"
    elif [[ -z $score ]]; then
      fail "no overall exposure level in the output"
      indent '|' <<<"$out"
    elif awk -v s="$score" -v b="$bound" 'BEGIN { exit !(s <= b) }'; then
      pass "exposure $score is within the recorded bound $bound"
    else
      fail "exposure $score is above the recorded bound $bound (docs/SERVICE.md)"
    fi
    # Negative control: a unit without ProtectSystem= and NoNewPrivileges= must
    # score above the bound, or the comparison proves nothing.
    sed '/^ProtectSystem=/d; /^NoNewPrivileges=/d' "$units/vpd.service" >"$broken/vpd.service"
    weaker=$(LC_ALL=C.UTF-8 systemd-analyze security --offline=true --no-pager "$broken/vpd.service" 2>&1 |
      sed -n 's/.*Overall exposure level for vpd.service: \([0-9.]*\).*/\1/p')
    if [[ -n $weaker && -n $bound ]] && awk -v s="$weaker" -v b="$bound" 'BEGIN { exit !(s > b) }'; then
      pass "negative control: a weaker unit scores $weaker, above the bound"
    else
      fail "negative control: a weaker unit scored '$weaker', not above the bound '$bound'"
    fi
  fi
else
  echo "  (this systemd-analyze has no --offline; skipped)"
fi

# ---------------------------------------------------------------------------
section "vpd-metrics.socket and vpd-metrics@.service (HTTP scrapes, off by default)"

vpctl_bin=$(realpath "$build_dir/ctl/vpctl" 2>/dev/null)
cp "$units_src/vpd-metrics.socket" "$units_src/vpd-metrics@.service" "$units/"
sed -i "s|/usr/bin/vpctl|$vpctl_bin|g" "$units/vpd-metrics@.service"
if verify_units "$units/vpd-metrics.socket" "$units/vpd-metrics@.service"; then
  pass "systemd-analyze verify: no warnings or errors about the metrics units"
else
  fail "systemd-analyze verify reported problems in the metrics units"
fi
metrics_socket=$units_src/vpd-metrics.socket
metrics_service=$units_src/vpd-metrics@.service
expect_setting "$metrics_socket" Accept yes
expect_setting "$metrics_socket" ListenStream 127.0.0.1:9477
expect_setting "$metrics_service" ExecStart "/usr/bin/vpctl metrics --http"
expect_setting "$metrics_service" StandardInput socket
expect_setting "$metrics_service" StandardOutput socket
expect_setting "$metrics_service" DynamicUser yes
expect_setting "$metrics_service" SupplementaryGroups vpd-ro
# A scrape needs no privilege: the unit must stay "SAFE" (systemd-analyze's own scale:
# below 2.0).
if systemd-analyze security --help 2>&1 | grep -q -- '--offline'; then
  cp "$units/vpd-metrics@.service" "$units/vpd-metrics@scrape.service"
  score=$(LC_ALL=C.UTF-8 systemd-analyze security --offline=true --no-pager \
    "$units/vpd-metrics@scrape.service" 2>&1 |
    sed -n 's/.*Overall exposure level for vpd-metrics@scrape.service: \([0-9.]*\).*/\1/p')
  if [[ -n $score ]] && awk -v s="$score" 'BEGIN { exit !(s < 2.0) }'; then
    pass "vpd-metrics@.service exposure $score (below 2.0, SAFE)"
  else
    fail "vpd-metrics@.service exposure '$score' is not below 2.0"
  fi
fi

# ---------------------------------------------------------------------------
echo
if [[ $failures -eq 0 ]]; then
  echo "PASS: systemd units"
  exit 0
fi
echo "FAIL: $failures check(s) failed"
exit 1
