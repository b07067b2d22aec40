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

# cpu1 : idle and total jiffies of core 1 (the load generator's), from /proc/stat.
cpu1() { awk '$1 == "cpu1" {print $5 + $6, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat; }

# load MODE URL [TOKENS] : one wrk run on core 1; prints its RESULT line followed by the idle
# share (%) of core 1 during the run: near 0, the figure measures wrk rather than the server.
load() {
  local before after result
  before=$(cpu1)
  result=$(MODE=$1 TOKENS=${3:-} IDENTITY=${IDENTITY:-} taskset -c 1 \
    wrk -t1 -c64 -d"${DURATION}s" --latency -s bench/sessions.lua "$2" | grep '^RESULT')
  after=$(cpu1)
  echo "$result $(echo "$before $after" | awk '{printf "%.1f", 100 * ($3 - $1) / ($4 - $2)}')"
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

