#!/usr/bin/env bash
# Client-side instructions per acquire+release, C ABI vs Rust `Lease` API,
# counted by callgrind: the repeatable half of `make bench` (wall-clock
# figures drift by several % between runs on a shared machine; instruction
# counts do not).
#
# usage: DFLOCKD_SERVERS=host:port benches/instructions.sh OUT_DIR ABI_PAIRS LEASE_PAIRS [N]
#
# ABI_PAIRS (benches/c/abi_pairs.c) and LEASE_PAIRS (benches/rust/lease_pairs.rs)
# each warm up, then run N pairs inside `measured_pairs`; callgrind counts
# only that function and what it calls, on the calling thread
# (--collect-atstart=no --toggle-collect). The server is another process,
# so none of its work is counted. Syscalls are the kernel's and not counted
# either; both programs make the same ones (strace -c agrees).
#
# The verdict uses the stricter of two figures: callgrind counts every byte
# of glibc's `rep stosb` memset as one instruction, and the core zeroes a
# 4 KiB read buffer per reply, which inflates both totals (the common
# denominator) by ~8,000 Ir/pair that cost far less on real hardware. The
# second figure leaves memset out, so the ABI's share can only look larger.
set -euo pipefail
out=$1 abi=$2 lease=$3 n=${4:-5000}
goal_pct=2

# count NAME TOGGLE CMD...: run CMD N under callgrind, counting inside TOGGLE.
count() {
    local name=$1 toggle=$2
    shift 2
    valgrind --tool=callgrind --collect-atstart=no --toggle-collect="$toggle" \
        --callgrind-out-file="$out/$name.callgrind" "$@" "$n" >"$out/$name.log" 2>&1 ||
        { cat "$out/$name.log" >&2; echo "instructions.sh: $name failed" >&2; exit 1; }
    callgrind_annotate "$out/$name.callgrind" >"$out/$name.self.txt"
    callgrind_annotate --inclusive=yes "$out/$name.callgrind" >"$out/$name.inclusive.txt"
    awk '/^summary:/ && $2 == 0 { bad = 1 } END { exit bad }' "$out/$name.callgrind" ||
        { echo "instructions.sh: nothing counted in $name ($toggle matched no call)" >&2; exit 1; }
}

# self_costs NAME: callgrind_annotate's per-function self-cost list, biggest first.
self_costs() {
    awk '/file:function/ { on = 1; getline; next } on && NF { print } on && !NF { exit }' "$out/$1.self.txt"
}

# ir NAME: "TOTAL WITHOUT_MEMSET" Ir per pair (memset: glibc's, from the self-cost list).
ir() {
    awk -v n="$n" '
        /^summary:/ { total = $2 }
        END { printf "%.1f ", total / n }' "$out/$1.callgrind"
    self_costs "$1" | awk -v n="$n" '
        /:__memset/ { x = $1; gsub(",", "", x); memset += x }
        END { printf "%.1f\n", (total - memset) / n }' total="$(awk '/^summary:/ { print $2 }' "$out/$1.callgrind")"
}

count abi 'measured_pairs' "$abi"
count lease '*measured_pairs' "$lease"
read -r abi_ir abi_nm < <(ir abi)
read -r lease_ir lease_nm < <(ir lease)
echo "## client instructions per acquire+release (callgrind Ir, $n pairs after warm-up, server in another process)"
printf '%-36s %10s %16s\n' "path" "Ir/pair" "without memset"
printf '%-36s %10s %16s\n' "Rust Lease::try_acquire+release" "$lease_ir" "$lease_nm"
printf '%-36s %10s %16s\n' "C dflockd_lease_try_acquire+release" "$abi_ir" "$abi_nm"
awk -v a="$abi_ir" -v l="$lease_ir" -v an="$abi_nm" -v ln="$lease_nm" -v g="$goal_pct" 'BEGIN {
    o = (a / l - 1) * 100
    on = (an / ln - 1) * 100
    worst = (on > o ? on : o)
    printf "INSTRUCTIONS abi=%s lease=%s overhead_pct=%.2f overhead_without_memset_pct=%.2f\n", a, l, o, on
    printf "ABI overhead in instructions: %+.1f Ir/pair = %+.2f %% (%+.2f %% without memset)   goal: < %d %% -> %s\n",
        a - l, o, on, g, (worst < g ? "MET" : "MISSED")
    exit (worst < g ? 0 : 3)
}' || {
    echo "Where the instructions go (callgrind_annotate, self cost, top entries):"
    for name in lease abi; do
        echo "--- $name"
        self_costs "$name" | head -15
    done
}
echo "(full profiles: $out/{abi,lease}.{self,inclusive}.txt; callgrind_annotate $out/abi.callgrind)"
