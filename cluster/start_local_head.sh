#!/usr/bin/env bash
# Start a Ray head node on this machine, ready for `ray job submit`, listening on loopback only.
#
# Why loopback: the job server runs whatever entrypoint it is sent, as the user who started Ray.
# Bound to 127.0.0.1 it is reachable only from this machine (or through an SSH tunnel that you
# open: `ssh -L 8265:127.0.0.1:8265 this-host`). --expose ADDR opts out, loudly.
#
# Why the PATH change: a submitted entrypoint such as `python jobs/train.py ...` runs in the
# environment Ray was started in, so starting Ray with the project's venv first on PATH makes that
# `python` the venv's python (set SCM_RAY_VENV to use another environment).
set -euo pipefail

usage() {
    cat <<'EOF'
usage: cluster/start_local_head.sh [options] [-- extra `ray start` arguments]

  --port N             GCS port (default 6379)
  --dashboard-port N   dashboard and job server port (default 8265)
  --num-cpus N         CPUs Ray may use (default: all it detects)
  --num-gpus N         GPUs Ray may use (default: all it detects)
  --temp-dir DIR       Ray's session/log folder (default: Ray's, /tmp/ray); keep it short
  --expose ADDR        listen on ADDR (a LAN address, or 0.0.0.0 for every interface) instead of
                       127.0.0.1. Anyone who reaches the port can run code as you: prefer a tunnel.
  --dry-run            print the `ray start` command and exit
  -h, --help           this text

Stop the head with `ray stop` (it stops every Ray process of yours on this machine).
EOF
}

die() { echo "start_local_head.sh: $*" >&2; exit 2; }

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${SCM_RAY_VENV:-$repo/.venv}
host=127.0.0.1
port=6379
dashboard_port=8265
num_cpus=""
num_gpus=""
temp_dir=""
exposed=0
dry_run=0
extra=()

while [ $# -gt 0 ]; do
    case "$1" in
        --port) port=${2:?--port needs a value}; shift 2 ;;
        --dashboard-port) dashboard_port=${2:?--dashboard-port needs a value}; shift 2 ;;
        --num-cpus) num_cpus=${2:?--num-cpus needs a value}; shift 2 ;;
        --num-gpus) num_gpus=${2:?--num-gpus needs a value}; shift 2 ;;
        --temp-dir) temp_dir=${2:?--temp-dir needs a value}; shift 2 ;;
        --expose) host=${2:?--expose needs an address}; exposed=1; shift 2 ;;
        --dry-run) dry_run=1; shift ;;
        -h|--help) usage; exit 0 ;;
        --) shift; extra=("$@"); break ;;
        *) usage >&2; die "unknown option: $1" ;;
    esac
done

if [ -x "$venv/bin/ray" ]; then
    export PATH="$venv/bin:$PATH"
elif ! command -v ray >/dev/null 2>&1; then
    die "no ray found: run 'make setup' (creates $repo/.venv) or set SCM_RAY_VENV to an environment with scm-ray"
fi

cmd=(ray start --head --port="$port" --dashboard-host="$host" --dashboard-port="$dashboard_port"
     --disable-usage-stats)
# 0.0.0.0 / :: are bind-all addresses, not a node's address: let Ray pick the node IP then.
case "$host" in
    0.0.0.0|::) ;;
    *) cmd+=(--node-ip-address="$host") ;;
esac
# Ray turns a loopback --node-ip-address into the host's address (so that other nodes could
# join) unless its "clusters enabled" switch is off; off, GCS, raylet, agents and workers all
# bind 127.0.0.1, and no other node can join this head, which a local head does not want.
case "$host" in
    127.*|localhost) export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=${RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER:-0} ;;
esac
[ -n "$num_cpus" ] && cmd+=(--num-cpus="$num_cpus")
[ -n "$num_gpus" ] && cmd+=(--num-gpus="$num_gpus")
[ -n "$temp_dir" ] && cmd+=(--temp-dir="$temp_dir")
cmd+=("${extra[@]}")

if [ "$exposed" = 1 ]; then
    cat >&2 <<EOF
WARNING: --expose $host: the dashboard and job server (port $dashboard_port) and the Ray ports will
WARNING: listen on $host. Anyone who can reach them can submit jobs that run code as $(id -un)
WARNING: on this machine. Restrict them with a firewall, or use the default and an SSH tunnel.
EOF
fi

if [ "$dry_run" = 1 ]; then
    echo "PATH=$venv/bin:\$PATH ${cmd[*]}"
    exit 0
fi

# Token authentication (Ray's own): every client and job must present ~/.ray/auth_token. Ray 2.60
# turns it on for new local clusters anyway once a token exists; we make it explicit so the head,
# `ray job submit` and the drivers agree. RAY_AUTH_MODE=disabled before this script opts out.
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-token}
if [ "$RAY_AUTH_MODE" = token ]; then
    ray get-auth-token --generate >/dev/null  # creates ~/.ray/auth_token only when missing
fi

"${cmd[@]}"

shown=$host
case "$host" in 0.0.0.0|::) shown=$(hostname -f 2>/dev/null || hostname) ;; esac
ray_bin=$(command -v ray)
cat <<EOF

scm-ray: Ray head is up (python: $(command -v python)).
  submit to:   export RAY_ADDRESS=http://$shown:$dashboard_port RAY_AUTH_MODE=$RAY_AUTH_MODE
  example:     $ray_bin job submit --working-dir . --runtime-env cluster/runtime_env.yaml \\
                   -- python jobs/train.py --config jobs/configs/train_synthetic.yaml
  follow:      $ray_bin job logs -f JOB_ID        stop a job: $ray_bin job stop JOB_ID
  stop Ray:    $ray_bin stop    (every Ray process of yours on this machine)
EOF
