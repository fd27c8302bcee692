#!/usr/bin/env bash
# rpc_server.sh start|stop [PORT] [STATE_DIR]
#
# A TVM RPC server on emulated aarch64 (qemu user-mode), bound to 127.0.0.1, for
# `slimtvm tune --target aarch64 --rpc 127.0.0.1:PORT`. Uses the emulated Python made by
# scripts/setup_arm_emulation.sh (ARM_PYTHON, default: its cached wrapper).
#   start: launches the server in the background, waits (bounded) until it is bound, prints the port
#   stop:  ends the server this script started (recorded PID) and its descendants, nothing else
# Timings measured through it mean nothing (emulation); the flow is what it is for.
# Adapted from shared/reference/arm-emulation/rpc_server_under_qemu.sh.
set -euo pipefail
cmd="${1:?usage: rpc_server.sh start|stop [PORT] [STATE_DIR]}"
PORT="${2:-9190}"
STATE="${3:-${SLIMTVM_CACHE:-$HOME/.cache/slimtvm}/rpc-state}"
ARM_PYTHON="${ARM_PYTHON:-${SLIMTVM_CACHE:-$HOME/.cache/slimtvm}/aarch64/bin/python3}"
HOST=127.0.0.1
mkdir -p "$STATE"
PIDF="$STATE/rpc_$PORT.pid"
LOG="$STATE/rpc_$PORT.log"

descendants() {  # PIDs of all descendants of $1
  local c
  for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do echo "$c"; descendants "$c"; done
}

case "$cmd" in
start)
  if [ -f "$PIDF" ] && kill -0 "$(cat "$PIDF")" 2>/dev/null; then echo "already running (pid $(cat "$PIDF")) on $HOST:$PORT"; exit 0; fi
  [ -x "$ARM_PYTHON" ] || { echo "no emulated python at $ARM_PYTHON: run scripts/setup_arm_emulation.sh first" >&2; exit 1; }
  : > "$LOG"
  "$ARM_PYTHON" -m tvm.exec.rpc_server --host "$HOST" --port "$PORT" --port-end $((PORT + 1)) >"$LOG" 2>&1 &
  echo $! > "$PIDF"
  for _ in $(seq 1 "${RPC_START_TIMEOUT:-180}"); do
    if grep -q "bind to $HOST:$PORT" "$LOG"; then echo "rpc server (aarch64, pid $(cat "$PIDF")) listening on $HOST:$PORT"; exit 0; fi
    kill -0 "$(cat "$PIDF")" 2>/dev/null || { echo "rpc server died:" >&2; cat "$LOG" >&2; rm -f "$PIDF"; exit 1; }
    sleep 1
  done
  echo "rpc server did not come up in ${RPC_START_TIMEOUT:-180} s" >&2; cat "$LOG" >&2; exit 1 ;;
stop)
  [ -f "$PIDF" ] || { echo "not running"; exit 0; }
  P=$(cat "$PIDF"); KIDS=$(descendants "$P")
  kill "$P" $KIDS 2>/dev/null || true
  sleep 2
  for q in $P $KIDS; do  # SIGKILL leftovers, only if that PID is still one of our qemu processes
    [ "$(ps -o comm= -p "$q" 2>/dev/null)" = qemu-aarch64 ] && kill -9 "$q" 2>/dev/null || true
  done
  rm -f "$PIDF"
  echo "stopped rpc server pid $P${KIDS:+ (children: $(echo $KIDS))}" ;;
*) echo "usage: $0 start|stop [PORT] [STATE_DIR]" >&2; exit 2 ;;
esac
