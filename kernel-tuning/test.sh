#!/usr/bin/env bash
# test.sh: tests for the profiles, apply and check. No framework, no root
# needed, nothing written to the real /proc/sys: apply runs for real only
# against fake trees (CHATD_PROC_ROOT), and with --dry-run against /proc.
#
#   kernel-tuning/test.sh          prints "ok - ..." / "not ok - ..." lines,
#                                  exits 1 if any assertion failed.
#
# bench/limits runs it from `go test` (TestKernelTuningScripts).
set -u

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

failed=0 passed=0
pass() {
	passed=$((passed + 1))
	echo "ok - $1"
}
fail() {
	failed=$((failed + 1))
	echo "not ok - $1"
	if [ -n "${2:-}" ]; then printf '%s\n' "$2" | sed 's/^/#   /'; fi
}
# run CMD...: sets $out (stdout+stderr) and $rc.
run() {
	out=$("$@" 2>&1)
	rc=$?
}
expect_rc() { # want description
	if [ "$rc" -eq "$1" ]; then pass "$2 (exit $rc)"; else fail "$2: exit $rc, want $1" "$out"; fi
}
expect_line() { # extended-regex description
	if grep -Eq -- "$1" <<<"$out"; then pass "$2"; else fail "$2: no line matching /$1/" "$out"; fi
}
expect_no_line() { # extended-regex description
	if grep -Eq -- "$1" <<<"$out"; then fail "$2: unexpected line matching /$1/" "$out"; else pass "$2"; fi
}

# keys FILE: "key value" lines of a profile, value blanks collapsed.
keys() {
	grep -Ev '^[[:space:]]*([#;]|$)' "$1" | sed -E 's/[[:space:]]*=[[:space:]]*/=/; s/[[:space:]]+/ /g; s/ $//'
}

# fake_tree DIR PROFILE...: a /proc/sys with every key of the profiles at a
# value different from the profile's ("0", or "1 2" style for multi-field
# keys), plus meminfo with 24 GiB available.
fake_tree() {
	local dir=$1 kv k v p
	shift
	mkdir -p "$dir/sys"
	for prof in "$@"; do
		while IFS= read -r kv; do
			k=${kv%%=*} v=${kv#*=}
			p=$dir/sys/${k//./\/}
			mkdir -p "$(dirname "$p")"
			case "$v" in
			*" "*) printf '1\t2\t3\n' >"$p" ;;
			*) echo 7 >"$p" ;;
			esac
		done < <(keys "$prof")
	done
	echo "0	0	3000000" >"$dir/sys/fs/file-nr"
	printf 'MemTotal:       24684100 kB\nMemAvailable:   24143040 kB\n' >"$dir/meminfo"
}

# set_key DIR KEY VALUE
set_key() { printf '%s\n' "$3" >"$1/sys/${2//./\/}"; }

# tuned DIR: a fake tree where both profiles are applied.
tuned() {
	fake_tree "$1" "$here/gateway.conf" "$here/loadgen.conf"
	CHATD_PROC_ROOT=$1 "$here/apply" gateway >/dev/null 2>&1
	CHATD_PROC_ROOT=$1 "$here/apply" loadgen >/dev/null 2>&1
}

# ---- profiles -------------------------------------------------------------------

for prof in gateway loadgen; do
	f=$here/$prof.conf
	# Every key line follows a comment line or another key line (a group of
	# keys under one comment), never a blank line.
	bad=$(awk '/^[[:space:]]*[a-z]/ && prev ~ /^[[:space:]]*$/ { print FILENAME ":" NR ": " $0 } { prev = $0 }' "$f")
	if [ -z "$bad" ]; then pass "$prof.conf: every key has a comment"; else fail "$prof.conf: keys without a comment" "$bad"; fi
	n=$(keys "$f" | wc -l)
	if [ "$n" -ge 15 ]; then pass "$prof.conf: $n keys"; else fail "$prof.conf: only $n keys"; fi
	dups=$(keys "$f" | cut -d= -f1 | sort | uniq -d)
	if [ -z "$dups" ]; then pass "$prof.conf: no key twice"; else fail "$prof.conf: duplicate keys" "$dups"; fi
done
conflicts=$(join -t= <(keys "$here/gateway.conf" | sort) <(keys "$here/loadgen.conf" | sort) | awk -F= '$2 != $3')
if [ -z "$conflicts" ]; then
	pass "keys shared by gateway.conf and loadgen.conf have the same value"
else
	fail "gateway.conf and loadgen.conf disagree" "$conflicts"
fi
for k in fs.file-max fs.nr_open net.core.somaxconn net.ipv4.tcp_max_syn_backlog net.core.netdev_max_backlog \
	net.ipv4.tcp_tw_reuse net.ipv4.tcp_fin_timeout net.ipv4.tcp_mem net.ipv4.tcp_rmem net.ipv4.tcp_wmem \
	net.core.rmem_default net.core.wmem_default net.ipv4.tcp_max_orphans net.netfilter.nf_conntrack_max \
	net.ipv4.tcp_keepalive_time net.ipv4.tcp_slow_start_after_idle; do
	keys "$here/gateway.conf" | grep -q "^$k=" || fail "gateway.conf lacks $k"
done
keys "$here/loadgen.conf" | grep -q '^net.ipv4.ip_local_port_range=1024 65535$' &&
	pass "loadgen.conf widens ip_local_port_range" || fail "loadgen.conf: ip_local_port_range"

# ---- apply ---------------------------------------------------------------------

run "$here/apply"
expect_rc 2 "apply without a role"
run "$here/apply" gateway --bogus
expect_rc 2 "apply with an unknown flag"

# --dry-run against the real /proc: reports every key, writes nothing.
snap() { for k in fs.file-max net.ipv4.tcp_rmem net.core.somaxconn; do cat "/proc/sys/${k//./\/}" 2>/dev/null; done; }
before=$(snap)
for role in gateway loadgen; do
	run "$here/apply" "$role" --dry-run
	expect_rc 0 "apply $role --dry-run on this host"
	expect_line "^summary: $role: $(keys "$here/$role.conf" | wc -l) keys:" "apply $role --dry-run: summary counts every key"
	expect_no_line '^(applied|adjusted) ' "apply $role --dry-run writes nothing"
	reported=$(grep -Ec '^(unchanged|would-apply|read-only|missing|failed) ' <<<"$out")
	want=$(keys "$here/$role.conf" | wc -l)
	if [ "$reported" -eq "$want" ]; then pass "apply $role --dry-run: one line per key"; else fail "apply $role --dry-run: $reported lines for $want keys" "$out"; fi
done
if [ "$(snap)" = "$before" ]; then pass "--dry-run left /proc/sys as it was"; else fail "--dry-run changed /proc/sys"; fi

# A fake tree: one key read-only, one missing, one that is a directory.
t=$tmp/apply
fake_tree "$t" "$here/gateway.conf"
rm "$t/sys/fs/nr_open"
ln -s /proc/sys/fs/file-nr "$t/sys/fs/nr_open" # the kernel refuses writes, even from root
rm "$t/sys/net/ipv4/tcp_max_orphans"
rm "$t/sys/net/ipv4/tcp_fin_timeout" && mkdir "$t/sys/net/ipv4/tcp_fin_timeout"
set_key "$t" net.ipv4.tcp_syncookies 1

run env CHATD_PROC_ROOT="$t" "$here/apply" gateway --dry-run
expect_rc 0 "apply --dry-run on a fake tree"
expect_line '^would-apply +fs\.file-max +7 -> 3000000$' "dry run: would-apply with current -> wanted"
expect_line '^read-only +fs\.nr_open ' "dry run: read-only key detected without writing"
if [ "$(cat "$t/sys/fs/file-max")" = 7 ]; then pass "dry run wrote nothing to the fake tree"; else fail "dry run wrote fs.file-max"; fi

run env CHATD_PROC_ROOT="$t" "$here/apply" gateway
expect_rc 0 "apply with read-only, missing and failing keys is not fatal"
expect_line '^applied +fs\.file-max +7 -> 3000000$' "applied: fs.file-max"
expect_line '^applied +net\.ipv4\.tcp_rmem +1 2 3 -> 4096 16384 1048576$' "applied: multi-field tcp_rmem"
expect_line '^unchanged +net\.ipv4\.tcp_syncookies +1$' "unchanged: tcp_syncookies"
expect_line '^read-only +fs\.nr_open .*(Permission denied|Read-only file system|Operation not permitted)' "read-only: fs.nr_open, with the errno"
expect_line '^missing +net\.ipv4\.tcp_max_orphans ' "missing: tcp_max_orphans"
expect_line '^failed +net\.ipv4\.tcp_fin_timeout ' "failed: a key that cannot be written for another reason"
n=$(keys "$here/gateway.conf" | wc -l)
expect_line "^summary: gateway: $n keys: $((n - 4)) applied, 0 adjusted, 1 unchanged, 0 would-apply, 1 read-only, 1 missing, 1 failed$" "summary line counts each outcome"
if [ "$(tr -s '\t ' ' ' <"$t/sys/net/ipv4/tcp_mem")" = "196608 294912 393216" ]; then pass "tcp_mem written"; else fail "tcp_mem not written: $(cat "$t/sys/net/ipv4/tcp_mem")"; fi

run env CHATD_PROC_ROOT="$t" "$here/apply" gateway
expect_rc 0 "second apply"
expect_line "^summary: gateway: $n keys: 0 applied, 0 adjusted, $((n - 3)) unchanged," "second apply: everything applied is unchanged"

mkdir -p "$tmp/empty"
run env CHATD_PROC_ROOT="$tmp/empty" "$here/apply" loadgen
expect_rc 1 "apply where no key exists"
expect_line 'nothing could be applied' "apply says nothing could be applied"

t=$tmp/readonly
fake_tree "$t" "$here/loadgen.conf"
while IFS= read -r kv; do
	k=${kv%%=*}
	ln -sf /proc/sys/fs/file-nr "$t/sys/${k//./\/}"
done < <(keys "$here/loadgen.conf")
run env CHATD_PROC_ROOT="$t" "$here/apply" loadgen
expect_rc 1 "apply where every key is read-only"

# ---- check ---------------------------------------------------------------------

run "$here/check"
expect_rc 2 "check without a role"
run "$here/check" gateway --conns many
expect_rc 2 "check with a bad --conns"

# Deterministic runs: a fake tree and a hard limit of 4096 open files
# (lowering a limit needs no privilege): 4096 - 256 spare = 3,840 connections
# per process, so 100,000 connections need 27 processes.
if [ "$(ulimit -Hn)" = unlimited ] || [ "$(ulimit -Hn)" -ge 4096 ]; then
	t=$tmp/tuned
	tuned "$t"
	chk() { out=$(ulimit -n 4096 && CHATD_PROC_ROOT=$1 "$here/check" "${@:2}" 2>&1); rc=$?; }

	chk "$t" gateway --same-host --conns 100000 --procs 27
	expect_rc 0 "check: 100K on a tuned box with 27+27 processes"
	expect_line '^READY for 100,000 connections' "check: READY line"
	expect_line '^  ok +open files per gateway proc +soft 4096 / hard 4096 +3,960 \(100,000/27 \+ 256\)' "check: open files per gateway process"
	expect_line '^  ok +fs\.file-max +3,000,000' "check: fs.file-max row"
	expect_line '^  ok +ports per source IP +1024-65535 = 64,512 +3,704 \(100,000/27 IPs\)' "check: ports per source IP row"
	expect_line '^  ok +memory \(MemAvailable\)' "check: memory row"
	expect_no_line '^  (differs|missing) ' "check: both profiles applied, no key differs"

	chk "$t" gateway --same-host --conns 100000
	expect_rc 0 "check: --procs defaults to the minimum"
	expect_line 'gateway processes: 27 +client processes: 27' "check: default procs = 27"

	chk "$t" gateway --same-host --conns 100000 --procs 10
	expect_rc 1 "check: too few gateway processes"
	expect_line '^  FAIL +open files per gateway proc ' "check: FAIL row for open files"
	expect_line '-> use more gateway processes: --procs 27 or more' "check: names --procs 27"
	expect_line '^NOT READY for 100,000 connections' "check: NOT READY line"

	set_key "$t" fs.file-max 100000
	chk "$t" gateway --same-host --conns 100000 --procs 27
	expect_rc 1 "check: fs.file-max too small"
	expect_line '-> sysctl -w fs.file-max=300000' "check: names sysctl -w fs.file-max"
	chk "$t" gateway --same-host --conns 100000 --procs 27 --strict
	expect_rc 1 "check --strict: a differing key is not ready"
	set_key "$t" fs.file-max 3000000

	set_key "$t" net.ipv4.ip_local_port_range "32768	60999"
	chk "$t" loadgen --conns 100000 --procs 27 --source-ips 1
	expect_rc 1 "check: one source IP for 100K connections"
	expect_line '-> add source IPs: --source-ips 4 or more' "check: names --source-ips 4"
	chk "$t" loadgen --conns 100000 --procs 27
	expect_rc 0 "check: loadgen with one source IP per process fits the default port range"
	expect_line '^  differs +net\.ipv4\.ip_local_port_range' "check: reports the differing key"
	chk "$t" loadgen --conns 100000 --procs 27 --strict
	expect_rc 1 "check --strict: differing key counts"
	expect_line '^  - kernel-tuning/apply loadgen' "check --strict: names apply"
	set_key "$t" net.ipv4.ip_local_port_range "1024	65535"

	printf 'MemAvailable:    1048576 kB\n' >"$t/meminfo"
	chk "$t" gateway --same-host --conns 100000 --procs 27
	expect_rc 1 "check: 1 GiB available for 100K connections on one box"
	expect_line '-> not enough memory: about [0-9,]+ connections fit' "check: names the connections that fit"
	printf 'MemAvailable:   24143040 kB\n' >"$t/meminfo"

	set_key "$t" net.netfilter.nf_conntrack_max 65536
	set_key "$t" net.netfilter.nf_conntrack_count 0
	chk "$t" gateway --conns 100000 --procs 27
	expect_rc 0 "check: conntrack loaded but idle is a warning"
	expect_line '^  WARN +nf_conntrack_max' "check: conntrack WARN row"
	set_key "$t" net.netfilter.nf_conntrack_count 12
	chk "$t" gateway --conns 100000 --procs 27
	expect_rc 1 "check: conntrack tracking with a small table"
	expect_line '-> sysctl -w net.netfilter.nf_conntrack_max=2097152' "check: names nf_conntrack_max"

	chk "$tmp/empty" gateway --conns 1000 --procs 1
	expect_rc 1 "check: nothing readable"
	expect_line '^  missing +fs\.file-max +\(missing\)' "check: missing profile key"
	expect_line '-> cannot read .*fs/file-max' "check: names the unreadable file"
else
	echo "ok - # SKIP deterministic check tests: hard open-files limit $(ulimit -Hn) < 4096"
fi

# The real host: ready or not, check must finish with a verdict.
run "$here/check" gateway --same-host
if [ "$rc" -le 1 ]; then pass "check gateway --same-host on this host (exit $rc)"; else fail "check on this host: exit $rc" "$out"; fi
expect_line '^(READY|NOT READY) for 1,000,000 connections' "check on this host: verdict line"

echo "# $passed passed, $failed failed"
[ "$failed" -eq 0 ]
