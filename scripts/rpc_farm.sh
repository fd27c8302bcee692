#!/usr/bin/env bash
# rpc_farm.sh start|stop N [TRACKER_PORT] [STATE_DIR]
#
# A measurement farm on this machine for `slimtvm tune --tracker`: TVM's RPC tracker and N TVM RPC
# servers on emulated aarch64 (qemu user-mode) registered with it under one key, all on 127.0.0.1.
#   start N: launches the tracker (this venv's Python) and N servers, waits (bounded) until all N
#            are registered, prints `tracker 127.0.0.1:PORT key KEY` and one `device I pid P` line
#            per server
#   stop:    ends the tracker and servers this script started (recorded PIDs, each server with its
#            session processes), nothing else
# Each server runs in its own session (setsid), so its PID is also its process group: ending that
# group ends the device as a whole, the way a board that loses power would (tests do this).
# Key: FARM_KEY (default aarch64-emu). Emulated Python: ARM_PYTHON (default: the cached one from
# scripts/setup_arm_emulation.sh). Timings measured through it mean nothing; the flow is the point.
set -euo pipefail
cmd="${1:?usage: rpc_farm.sh start N [TRACKER_PORT] [STATE_DIR] | stop [TRACKER_PORT] [STATE_DIR]}"
CACHE="${SLIMTVM_CACHE:-$HOME/.cache/slimtvm}"
ARM_PYTHON="${ARM_PYTHON:-$CACHE/aarch64/bin/python3}"
HOST_PYTHON="${HOST_PYTHON:-$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/python}"
KEY="${FARM_KEY:-aarch64-emu}"
HOST=127.0.0.1

if [ "$cmd" = start ]; then
  N="${2:?usage: rpc_farm.sh start N [TRACKER_PORT] [STATE_DIR]}"
  PORT="${3:-9290}"
  STATE="${4:-$CACHE/rpc-farm-$PORT}"
else
  PORT="${2:-9290}"
  STATE="${3:-$CACHE/rpc-farm-$PORT}"
fi
mkdir -p "$STATE"

registered() {  # servers registered under KEY at the tracker (0 while it is not answering)
  "$HOST_PYTHON" - "$PORT" "$KEY" <<'EOF' 2>/dev/null || echo 0
import sys
from tvm import rpc
summary = rpc.connect_tracker("127.0.0.1", int(sys.argv[1])).summary()
print(sum(1 for s in summary["server_info"] if s["key"] == "server:" + sys.argv[2]))
EOF
}

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

case "$cmd" in
start)
  [[ "$N" =~ ^[1-9][0-9]*$ ]] || { echo "N must be a positive number of servers, got '$N'" >&2; exit 2; }
  [ -x "$ARM_PYTHON" ] || { echo "no emulated python at $ARM_PYTHON: run scripts/setup_arm_emulation.sh first" >&2; exit 1; }
  [ -x "$HOST_PYTHON" ] || { echo "no host python with TVM at $HOST_PYTHON (set HOST_PYTHON)" >&2; exit 1; }
  if alive "$STATE/tracker.pid"; then echo "a farm already runs from $STATE (tracker pid $(cat "$STATE/tracker.pid")); stop it first" >&2; exit 1; fi
  setsid "$HOST_PYTHON" -m tvm.exec.rpc_tracker --host "$HOST" --port "$PORT" --port-end $((PORT + 1)) >"$STATE/tracker.log" 2>&1 &
  echo $! > "$STATE/tracker.pid"
  for _ in $(seq 1 60); do
    grep -q "bind to $HOST:$PORT" "$STATE/tracker.log" && break
    alive "$STATE/tracker.pid" || { echo "rpc tracker died:" >&2; cat "$STATE/tracker.log" >&2; exit 1; }
    sleep 0.5
  done
  grep -q "bind to $HOST:$PORT" "$STATE/tracker.log" || { echo "rpc tracker did not bind $HOST:$PORT" >&2; cat "$STATE/tracker.log" >&2; exit 1; }
  for i in $(seq 0 $((N - 1))); do
    # each server its own port range, so that no two race for the same port
    SERVER_PORT=$((PORT + 10 + 10 * i))
    setsid "$ARM_PYTHON" -m tvm.exec.rpc_server --host "$HOST" --port "$SERVER_PORT" --port-end $((SERVER_PORT + 10)) \
      --tracker "$HOST:$PORT" --key "$KEY" >"$STATE/server_$i.log" 2>&1 &
    echo $! > "$STATE/server_$i.pid"
  done
  for _ in $(seq 1 "${RPC_START_TIMEOUT:-240}"); do
    [ "$(registered)" -ge "$N" ] && break
    for i in $(seq 0 $((N - 1))); do
      alive "$STATE/server_$i.pid" || { echo "rpc server $i died:" >&2; cat "$STATE/server_$i.log" >&2; exit 1; }
    done
    sleep 1
  done
  [ "$(registered)" -ge "$N" ] || { echo "only $(registered) of $N servers registered in ${RPC_START_TIMEOUT:-240} s" >&2; exit 1; }
  echo "tracker $HOST:$PORT key $KEY"
  for i in $(seq 0 $((N - 1))); do echo "device $i pid $(cat "$STATE/server_$i.pid")"; done ;;
stop)
  stopped=()
  for f in "$STATE"/server_*.pid "$STATE"/tracker.pid; do
    [ -f "$f" ] || continue
    P=$(cat "$f")
    # the group setsid made for this PID: the server and its session processes
    if kill -0 "$P" 2>/dev/null || kill -0 -- "-$P" 2>/dev/null; then kill -- "-$P" 2>/dev/null || true; stopped+=("$P"); fi
    rm -f "$f"
  done
  sleep 1
  for P in "${stopped[@]}"; do kill -9 -- "-$P" 2>/dev/null || true; done
  echo "stopped ${#stopped[@]} processes (groups: ${stopped[*]:-none})" ;;
*) echo "usage: $0 start N [TRACKER_PORT] [STATE_DIR] | stop [TRACKER_PORT] [STATE_DIR]" >&2; exit 2 ;;
esac
