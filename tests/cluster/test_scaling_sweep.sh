#!/usr/bin/env bash
# benchmarks/scaling_sweep.sh on 2 "nodes" of tools/cluster/netns_rig.sh (zt1, zt2; mpirun with a
# hostfile, the rig's mpirun wrapper through --mpirun), the tiny model, 4 steps: nodes 1,2 x 1 rank per
# node x ZeRO 2, 3, plus ZeRO 0 with CPU offload, which zlora refuses (recorded as failed, not run).
# Asserts: the sweep exits 3 (some run failed) after writing the report; scaling.csv/.json/.md have every
# row; each run that ran is ok with time, samples/s and tokens/s > 0, world size N, efficiency 1 at one
# node and in (0, 1.5) at two; the failed rows carry their reason; scaling.svg is well-formed SVG with a
# series per variant and scaling.png (where built with libpng) a PNG of the SVG's size. Bad options
# end with exit 2 and a clear message, before anything runs.
# shellcheck source=tests/cluster/lib.sh
source "$(dirname "$0")/lib.sh"
cl_init scaling_sweep
cl_need_root
cl_need_netns
cl_fixture
sweep=$CL_SRC/benchmarks/scaling_sweep.sh

# Bad options: exit 2, a message naming the problem, nothing made.
bad() {
  local want=$1 rc=0 outp
  shift
  outp=$("$sweep" --config "$CL_FIX/job.yaml" --out "$CL_WORK/bad" --zlora "$CL_ZLORA" "$@" 2>&1) || rc=$?
  ((rc == 2)) || cl_fail "scaling_sweep.sh $* exited $rc (expected 2): $outp"
  [[ "$outp" == *"$want"* ]] || cl_fail "scaling_sweep.sh $*: expected '$want' in: $outp"
}
bad "--launcher must be mpirun or sbatch" --launcher ssh
bad "--stages (0, 1, 2 or 3): '5' is not valid" --stages 2,5
bad "needs a --hostfile with at least 2 hosts" --nodes 1,2
bad "unknown option '--max_steps'" --max_steps 3
[[ ! -e "$CL_WORK/bad" ]] || cl_fail "a rejected sweep made $CL_WORK/bad"
cl_log "bad options rejected"

cl_netns_up 2
printf '# the rig\nzt1 slots=1\nzt2 slots=1\n' > "$CL_WORK/hostfile"
out=$CL_WORK/sweep
rc=0
"$sweep" --launcher mpirun --mpirun "$CL_SRC/tools/cluster/netns_rig.sh mpirun" --mpirun-args "--bind-to none" \
  --hostfile "$CL_WORK/hostfile" --nodes 1,2 --ranks-per-node 1 --variants z2-none,z3-none,z0-cpu --steps 4 \
  --config "$CL_FIX/job.yaml" --out "$out" --zlora "$CL_ZLORA" -- --save_strategy no > "$CL_WORK/sweep.log" 2>&1 || rc=$?
((rc == 3)) || cl_fail "the sweep exited $rc (expected 3: the two ZeRO 0 + offload rows fail): $(tail -n 30 "$CL_WORK/sweep.log")"
cl_log "sweep done: $(grep -c ': ok in' "$CL_WORK/sweep.log") runs ok"

for f in scaling.md scaling.json scaling.csv scaling.svg; do [[ -s "$out/$f" ]] || cl_fail "no $out/$f"; done
csv=$out/scaling.csv
(($(wc -l < "$csv") == 7)) || cl_fail "scaling.csv: expected a header and 6 rows: $(cat "$csv")"
# Columns by name from the header.
col() { awk -F, -v name="$1" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == name) print i }' "$csv"; }
for name in run nodes world_size status train_runtime_s samples_per_second tokens_per_second scaling_efficiency; do
  [[ -n "$(col "$name")" ]] || cl_fail "scaling.csv has no column $name: $(head -n 1 "$csv")"
done
for n in 1 2; do
  for z in 2 3; do
    line=$(grep "^n$n-r1-z$z-none," "$csv") || cl_fail "no row n$n-r1-z$z-none in scaling.csv"
    awk -F, -v n="$n" -v st="$(col status)" -v w="$(col world_size)" -v t="$(col train_runtime_s)" \
      -v sp="$(col samples_per_second)" -v tp="$(col tokens_per_second)" -v e="$(col scaling_efficiency)" '
      { ok = $st == "ok" && $w == n && $t > 0 && $sp > 0 && $tp > 0 &&
             (n == 1 ? ($e > 0.9999 && $e < 1.0001) : ($e > 0 && $e < 1.5)); exit !ok }' <<< "$line" ||
      cl_fail "row n$n-r1-z$z-none is not a sane ok row: $line (header: $(head -n 1 "$csv"))"
    cl_log "n$n-r1-z$z-none: $(echo "$line" | cut -d, -f"$(col tokens_per_second)") tokens/s, efficiency $(echo "$line" | cut -d, -f"$(col scaling_efficiency)")"
  done
  grep -q "^n$n-r1-z0-cpu,.*,failed,.*needs zero_stage 1, 2 or 3" "$csv" ||
    cl_fail "row n$n-r1-z0-cpu is not failed with its reason: $(grep "^n$n-r1-z0-cpu" "$csv")"
done
(($(grep -c '^| n[12]-r1-z' "$out/scaling.md") == 6)) || cl_fail "scaling.md does not have 6 rows: $(cat "$out/scaling.md")"
(($(grep -c '"status": "ok"' "$out/scaling.json") == 4)) || cl_fail "scaling.json does not have 4 ok runs"

svg=$out/scaling.svg
if command -v xmllint > /dev/null; then
  xmllint --noout "$svg" || cl_fail "scaling.svg is not well-formed XML"
fi
head -c 200 "$svg" | grep -q '<svg xmlns="http://www.w3.org/2000/svg"' || cl_fail "scaling.svg does not start an SVG"
(($(grep -c '<polyline' "$svg") == 4)) || cl_fail "scaling.svg: expected 2 series x 2 panels of polylines"
if [[ -f "$out/scaling.png" ]]; then
  [[ "$(head -c 8 "$out/scaling.png" | od -An -tx1 | tr -d ' \n')" == 89504e470d0a1a0a ]] ||
    cl_fail "scaling.png is not a PNG"
  w=$(od -An -tu1 -j16 -N4 "$out/scaling.png" | awk '{print $1 * 16777216 + $2 * 65536 + $3 * 256 + $4}')
  [[ "$w" == "$(sed -n 's/.*<svg[^>]* width="\([0-9]*\)".*/\1/p' "$svg" | head -n 1)" ]] ||
    cl_fail "scaling.png is $w pixels wide, the SVG is not"
  cl_log "scaling.svg and scaling.png ($w px wide) written"
else
  cl_log "scaling.svg written (no scaling.png: built without libpng)"
fi
