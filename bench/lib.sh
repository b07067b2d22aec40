# Shell functions shared by bench/run and bench/ab (sourced; they expect $WORK, $PIDS and
# $DURATION to be set by the script).

# need COMMAND PACKAGE: installs Debian's PACKAGE when COMMAND is missing.
need() {
  command -v "$1" >/dev/null || apt-get install -y "$2" >/dev/null 2>&1 \
    || { apt-get update >/dev/null && apt-get install -y "$2" >/dev/null; }
}
# start NAME CMD... : runs CMD pinned to core 0, waits for its "listening on http://ADDR" line.
start() {
  local name=$1; shift
  taskset -c 0 "$@" > "$WORK/$name.out" 2> "$WORK/$name.err" &
  PIDS+=($!)
  LAST_PID=$!
  for _ in $(seq 1 200); do
    if grep -q "listening on http://" "$WORK/$name.out" 2>/dev/null; then
      URL=$(grep -o "http://[0-9.:]*" "$WORK/$name.out" | head -1)
      return 0
    fi
    sleep 0.05
  done
  echo "$name did not start:" >&2; cat "$WORK/$name.err" >&2; exit 1
}

# load MODE URL [TOKENS] : one run of the load generator (bench/src/bin/load.rs, 64
# connections) on core 1; prints its RESULT line followed by the idle share (%) of core 1 (the
# generator's: near 0, the figure measures the generator rather than the server) and of core 0
# (the server's) during the run, as the generator measured them over the run alone (not while
# it reads its tokens). $LOAD is the generator's binary (default target/release/load).
load() {
  local out idle
  out=$(IDENTITY=${IDENTITY:-} taskset -c 1 "${LOAD:-target/release/load}" "$1" "$2" ${3:+"$3"} \
    --connections "${CONNECTIONS:-64}" --duration "$DURATION")
  read -r -a idle <<< "$(grep '^IDLE' <<< "$out")"
  echo "$(grep '^RESULT' <<< "$out") ${idle[2]:-} ${idle[1]:-}"
}

rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

# settle PID: waits (at most 300 s) until the process used under 2 % of a core for a second,
# so a scenario does not measure the compaction left behind by a bulk preparation.
settle() {
  local ticks=$(getconf CLK_TCK) before after
  for _ in $(seq 1 300); do
    before=$(awk '{print $14 + $15}' "/proc/$1/stat")
    sleep 1
    after=$(awk '{print $14 + $15}' "/proc/$1/stat")
    [ $(( (after - before) * 100 )) -lt $(( 2 * ticks )) ] && return 0
  done
}

