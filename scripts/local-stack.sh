#!/usr/bin/env bash
# Process lifecycle for the local stack, driven by the Makefile.
#
#   local-stack.sh start NAME -- CMD [ARGS...]              start CMD in its own process group
#   local-stack.sh start-with-env NAME ENV_FILE -- CMD ...  same, with KEY=VALUE lines exported
#   local-stack.sh ensure-free NAME URL                     fail if something else answers at URL
#   local-stack.sh wait-http NAME URL TIMEOUT_SECS          wait until URL answers HTTP at all
#   local-stack.sh wait-alive NAME SECS                     fail if NAME exits within SECS
#   local-stack.sh stop NAME                                stop NAME's process group
#   local-stack.sh stop-all                                 stop every service, newest first
#   local-stack.sh status                                   list services and their state
#   local-stack.sh tail-logs [LINES]                        print the end of every service log
#
# Every service runs as the leader of its own session (setsid), so stopping it signals the whole
# group, children included. Each process also carries HIKYAKU_LOCAL_SERVICE=<dir>:<name> in its
# environment: a pid file is only trusted when the process it names still carries that marker
# (pids are reused), and stray descendants that left the group are found by it too. Nothing is
# ever matched by process name.
set -euo pipefail

LOCAL_DIR="${HIKYAKU_LOCAL_DIR:-$PWD/.local}"
PID_DIR="$LOCAL_DIR/pids"
LOG_DIR="$LOCAL_DIR/logs"
# Start order; stop-all walks it backwards.
SERVICES=(moto ses ses-proxy lambda-watch lambda-proxy sns-pump scheduler pump)

die() { echo "error: $*" >&2; exit 1; }

pid_file() { echo "$PID_DIR/$1.pid"; }
log_file() { echo "$LOG_DIR/$1.log"; }
marker() { echo "HIKYAKU_LOCAL_SERVICE=$LOCAL_DIR:$1"; }

# True when pid $2 is alive and carries service $1's marker.
is_ours() {
    local name=$1 pid=$2
    [[ -r /proc/$pid/environ ]] || return 1
    # Read the whole environment first: `grep -q` quitting early would make the writer die of
    # SIGPIPE, which pipefail turns into a failed check of a process that is ours.
    local env
    env=$(tr '\0' '\n' 2>/dev/null <"/proc/$pid/environ") || return 1
    grep -qxF "$(marker "$name")" <<<"$env"
}

# Prints the pid of a running service, or nothing (removing a stale pid file).
running_pid() {
    local name=$1 file pid
    file=$(pid_file "$name")
    [[ -f $file ]] || return 0
    pid=$(<"$file")
    if [[ $pid =~ ^[0-9]+$ ]] && is_ours "$name" "$pid"; then
        echo "$pid"
    else
        rm -f "$file"
    fi
}

# Pids of every process carrying the service's marker (the group and any stray descendants).
marked_pids() {
    local name=$1 m env pid
    m=$(marker "$name")
    for env in /proc/[0-9]*/environ; do
        pid=${env#/proc/}
        pid=${pid%/environ}
        [[ $pid == "$$" ]] && continue
        if tr '\0' '\n' 2>/dev/null <"$env" | grep -xF "$m" >/dev/null; then
            echo "$pid"
        fi
    done
}

cmd_start() {
    local name=$1 env_file=$2
    shift 2
    [[ ${1:-} == -- ]] && shift
    [[ $# -gt 0 ]] || die "start $name: no command given"
    mkdir -p "$PID_DIR" "$LOG_DIR"
    local pid
    pid=$(running_pid "$name")
    if [[ -n $pid ]]; then
        echo "==> $name already running (pid $pid)"
        return 0
    fi
    if [[ -n $env_file ]]; then
        [[ -f $env_file ]] || die "start $name: environment file $env_file does not exist"
        set -a
        # shellcheck disable=SC1090
        . "$env_file"
        set +a
    fi
    local log
    log=$(log_file "$name")
    echo "==> starting $name (log: $log)"
    {
        echo "---- $(date -u +%Y-%m-%dT%H:%M:%SZ) starting: $*"
    } >>"$log"
    # The background job is not a process-group leader, so setsid execs in place and $! is the
    # new session's (and group's) leader.
    export "$(marker "$name")"
    setsid "$@" >>"$log" 2>&1 </dev/null &
    local pid=$! i
    echo "$pid" >"$(pid_file "$name")"
    # Until the forked shell execs, /proc/<pid>/environ still shows this script's original
    # environment, without the marker; wait for the exec so later checks can trust the marker.
    for ((i = 0; i < 100; i++)); do
        is_ours "$name" "$pid" && return 0
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.05
    done
}

cmd_ensure_free() {
    local name=$1 url=$2
    [[ -z $(running_pid "$name") ]] || return 0
    if curl -s -o /dev/null --max-time 2 "$url"; then
        die "$name: something else already answers at $url (another local stack? run \`make local-down\` where it was started, or pick another port)"
    fi
}

cmd_wait_http() {
    local name=$1 url=$2 timeout=$3 pid deadline log
    log=$(log_file "$name")
    deadline=$((SECONDS + timeout))
    while true; do
        pid=$(running_pid "$name")
        if [[ -z $pid ]]; then
            echo "error: $name exited during startup; last lines of $log:" >&2
            tail -n 20 "$log" >&2 || true
            exit 1
        fi
        if curl -s -o /dev/null --max-time 2 "$url"; then
            echo "==> $name is up ($url)"
            return 0
        fi
        if ((SECONDS >= deadline)); then
            echo "error: $name did not answer $url within ${timeout}s; see $log; last lines:" >&2
            tail -n 20 "$log" >&2 || true
            exit 1
        fi
        sleep 0.3
    done
}

cmd_wait_alive() {
    local name=$1 secs=$2 log
    log=$(log_file "$name")
    sleep "$secs"
    if [[ -z $(running_pid "$name") ]]; then
        echo "error: $name exited during startup; last lines of $log:" >&2
        tail -n 20 "$log" >&2 || true
        exit 1
    fi
    echo "==> $name is running"
}

cmd_stop() {
    local name=$1 pid i
    pid=$(running_pid "$name")
    if [[ -n $pid ]]; then
        echo "==> stopping $name (process group $pid)"
        kill -TERM -- "-$pid" 2>/dev/null || true
        for ((i = 0; i < 100; i++)); do
            kill -0 -- "-$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 -- "-$pid" 2>/dev/null; then
            echo "    $name ignored SIGTERM for 10s; sending SIGKILL"
            kill -KILL -- "-$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$(pid_file "$name")"
    # Descendants that moved to a group of their own still carry the marker.
    local strays
    strays=$(marked_pids "$name")
    if [[ -n $strays ]]; then
        echo "    stopping leftover $name processes: $(echo "$strays" | tr '\n' ' ')"
        # shellcheck disable=SC2086
        kill -TERM $strays 2>/dev/null || true
        sleep 1
        strays=$(marked_pids "$name")
        # shellcheck disable=SC2086
        [[ -z $strays ]] || kill -KILL $strays 2>/dev/null || true
    fi
}

cmd_stop_all() {
    local i
    for ((i = ${#SERVICES[@]} - 1; i >= 0; i--)); do
        cmd_stop "${SERVICES[i]}"
    done
}

cmd_status() {
    local name pid
    for name in "${SERVICES[@]}"; do
        pid=$(running_pid "$name")
        if [[ -n $pid ]]; then
            printf '  %-13s running (pid %s)  log: %s\n' "$name" "$pid" "$(log_file "$name")"
        else
            printf '  %-13s stopped\n' "$name"
        fi
    done
}

case "${1:-}" in
start) shift; name=${1:?name}; shift; cmd_start "$name" "" "$@" ;;
start-with-env) shift; name=${1:?name}; env_file=${2:?env file}; shift 2; cmd_start "$name" "$env_file" "$@" ;;
ensure-free) shift; cmd_ensure_free "${1:?name}" "${2:?url}" ;;
wait-http) shift; cmd_wait_http "${1:?name}" "${2:?url}" "${3:?timeout}" ;;
wait-alive) shift; cmd_wait_alive "${1:?name}" "${2:?seconds}" ;;
stop) shift; cmd_stop "${1:?name}" ;;
stop-all) cmd_stop_all ;;
status) cmd_status ;;
tail-logs)
    for name in "${SERVICES[@]}"; do
        log=$(log_file "$name")
        [[ -f $log ]] || continue
        echo "---- $log (last ${2:-40} lines) ----"
        tail -n "${2:-40}" "$log"
    done
    ;;
*) die "usage: $0 start|start-with-env|ensure-free|wait-http|wait-alive|stop|stop-all|status ..." ;;
esac
