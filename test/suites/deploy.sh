#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The deployment files and the documented behaviour behind them. It checks the YAML syntax and
# structure of deploy/kubernetes/, runs the ConfigMap's ini and its three probe paths against a
# real daemon, checks that every config key is documented, and tests with calls from a real
# Elixir node how `python =` selects an interpreter or a virtualenv (docs/production.md).
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${SNAKEPIT_BUILD_DIR:-$root/build}
daemon=$build/cnode/snakepit-cnode
python=/usr/bin/python3
work=$(mktemp -d /tmp/snakepit-deploy.XXXXXX)
export SNAKEPIT_COOKIE="deploy_suite_${RANDOM}${RANDOM}"

passed=0
failed=0
skipped=0
daemon_pid=

cleanup() {
    if [ -n "$daemon_pid" ]; then
        kill -TERM "$daemon_pid" 2>/dev/null
        wait "$daemon_pid" 2>/dev/null
    fi
    rm -rf "$work"
}
trap cleanup EXIT

ok() { echo "PASS $1"; passed=$((passed + 1)); }
not_ok() { echo "FAIL $1: $2"; failed=$((failed + 1)); }
skip() { echo "SKIP $1: $2"; skipped=$((skipped + 1)); }

# ---- Kubernetes manifests ----

out=$("$python" - "$root/deploy/kubernetes" "$work/configmap.ini" <<'EOF' 2>&1
import glob, os, sys
import yaml

directory, ini_out = sys.argv[1], sys.argv[2]
docs = {}
for path in sorted(glob.glob(os.path.join(directory, "*.yaml"))):
    with open(path) as f:
        for doc in yaml.safe_load_all(f):
            docs.setdefault(doc["kind"], []).append(doc)
problems = []
def check(condition, message):
    if not condition:
        problems.append(message)

for kind in ("Deployment", "Service", "Secret", "ConfigMap", "Kustomization"):
    check(kind in docs, f"no {kind}")
if not problems:
    secret = docs["Secret"][0]
    check("cookie" in secret.get("stringData", {}), "the Secret has no key 'cookie'")
    config = docs["ConfigMap"][0]
    check("snakepit.ini" in config["data"], "the ConfigMap has no snakepit.ini")
    with open(ini_out, "w") as f:
        f.write(config["data"].get("snakepit.ini", ""))
    service = docs["Service"][0]
    check(service["spec"].get("clusterIP") == "None", "the Service is not headless")
    pod = docs["Deployment"][0]["spec"]["template"]["spec"]
    check(pod.get("subdomain") == service["metadata"]["name"],
          "pod subdomain is not the headless Service's name")
    main = pod["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in main["ports"]}
    check(ports.get("http") == 9568, "container port 'http' is not 9568")
    for probe, path in (("startupProbe", "/health/startup"), ("livenessProbe", "/health/live"),
                        ("readinessProbe", "/health/ready")):
        get = main.get(probe, {}).get("httpGet", {})
        check(get.get("path") == path and get.get("port") == "http", f"{probe} is not GET {path}")
        print("probe", path)
    mounts = {m["name"]: m["mountPath"] for m in main["volumeMounts"]}
    args = main["args"]
    check(f"--cookie-file={mounts.get('cookie')}/cookie" in args, "--cookie-file is not the Secret")
    check(f"--config={mounts.get('config')}/snakepit.ini" in args, "--config is not the ConfigMap")
    volumes = {v["name"]: v for v in pod["volumes"]}
    check(volumes["cookie"]["secret"]["secretName"] == secret["metadata"]["name"],
          "the cookie volume is not the Secret")
    check(pod["terminationGracePeriodSeconds"] * 1000 >
          int([l.split("=")[1] for l in config["data"]["snakepit.ini"].splitlines()
               if l.strip().startswith("shutdown_timeout_ms")][0]),
          "terminationGracePeriodSeconds is not above shutdown_timeout_ms")
    sidecars = [c for c in pod.get("initContainers", []) if c.get("command") == ["epmd"]]
    check(sidecars and sidecars[0].get("restartPolicy") == "Always", "no epmd sidecar")
    listed = set(docs["Kustomization"][0]["resources"])
    files = {os.path.basename(p) for p in glob.glob(os.path.join(directory, "*.yaml"))}
    check(listed == files - {"kustomization.yaml"}, f"kustomization lists {sorted(listed)}")
for p in problems:
    print("problem", p)
sys.exit(1 if problems else 0)
EOF
)
if [ $? -eq 0 ]; then
    ok "kubernetes manifests parse and agree"
else
    not_ok "kubernetes manifests" "$out"
fi

out=$("$daemon" --check-config --config "$work/configmap.ini" 2>&1)
rc=$?
if [ "$rc" -eq 0 ]; then ok "configmap ini valid"; else not_ok "configmap ini valid" "exit $rc: $out"; fi

# ---- every key documented ----

keys=$(sed -nE 's/^ *(STR|UINT|SIZE|BOOL)\((Config|PoolConfig|LibraryConfig), ([a-z_]+).*/\3/p' \
    "$root/cnode/config.c" | sed -E 's/^store_//' | sort -u)
keys="$keys sname name level format listen"
undocumented=()
for key in $keys; do
    grep -q "| \`$key\` |" "$root/docs/configuration.md" || undocumented+=("configuration.md:$key")
    grep -qE "^;? ?$key =" "$root/systemd/snakepit.ini" || undocumented+=("snakepit.ini:$key")
done
if [ "$(wc -w <<<"$keys")" -lt 30 ]; then
    not_ok "config keys documented" "found only $(wc -w <<<"$keys") keys in cnode/config.c"
elif [ ${#undocumented[@]} -eq 0 ]; then
    ok "all $(wc -w <<<"$keys") config keys documented"
else
    not_ok "config keys documented" "missing: ${undocumented[*]}"
fi

# ---- a real daemon: probes and interpreter selection ----

if [ ! -x "$build/cnode/snakepit-worker" ]; then
    skip "daemon checks" "snakepit-worker is not built"
    echo "deploy: $passed passed, $failed failed, $skipped skipped"
    [ "$failed" -eq 0 ]
    exit
fi
if ! epmd -names >/dev/null 2>&1; then
    skip "daemon checks" "no epmd answers (test/run_all.sh starts one)"
    echo "deploy: $passed passed, $failed failed, $skipped skipped"
    [ "$failed" -eq 0 ]
    exit
fi

free_port() {
    "$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start CONFIG [FLAG...]: start the daemon and wait up to $ready_wait tenths of a second
# (default 30 s) for its READY line.
start() {
    local config=$1
    shift
    : >"$work/stdout"
    "$daemon" --config "$config" --sname "deploy_$$_$RANDOM" "$@" \
        >"$work/stdout" 2>"$work/daemon.log" &
    daemon_pid=$!
    for _ in $(seq "${ready_wait:-300}"); do
        grep -q '^READY ' "$work/stdout" && node=$(awk '{print $2; exit}' "$work/stdout") && return 0
        kill -0 "$daemon_pid" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

stop() {
    kill -TERM "$daemon_pid" 2>/dev/null
    wait "$daemon_pid" 2>/dev/null
    daemon_pid=
}

call() {
    elixir --sname "deploy_client_$RANDOM" --cookie "$SNAKEPIT_COOKIE" \
        "$root/chaos/client.exs" "$node" call "$@" 2>&1
}

port=$(free_port)
if start "$work/configmap.ini" --http "127.0.0.1:$port"; then
    codes=
    for path in /health/startup /health/live /health/ready; do
        codes="$codes $path=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port$path")"
    done
    if [ "$codes" = " /health/startup=200 /health/live=200 /health/ready=200" ]; then
        ok "probe paths answer 200 when ready"
    else
        not_ok "probe paths answer 200 when ready" "$codes"
    fi
    stop
else
    not_ok "daemon with the configmap ini" "no READY: $(tail -n 5 "$work/daemon.log")"
    stop
fi

# A pool per interpreter choice; each call prints "result TERM" or "error KIND MESSAGE".
pool_ini() {
    printf '[pool default]\nsize = 1\npython = %s\n\n[library importlib]\nmodule = importlib\n' "$1"
    printf '\n[library deploy_probe]\nmodule = deploy_probe\n'
}

on_path=$(command -v python3)
pool_ini auto >"$work/auto.ini"
if start "$work/auto.ini" --http off; then
    numpy=$(call python.importlib.metadata.version '["numpy"]')
    expected=$(dpkg-query -W -f='${Version}' python3-numpy | sed -E 's/^[0-9]+://; s/[-+~].*//')
    if [ "$numpy" = "result \"$expected\"" ]; then
        ok "python = auto uses Debian's numpy $expected (python3 on PATH: $on_path)"
    else
        not_ok "python = auto uses Debian's numpy" "$numpy (expected $expected)"
    fi
else
    not_ok "python = auto" "no READY: $(tail -n 5 "$work/daemon.log")"
fi
stop

# A virtualenv of the Debian interpreter, without and with the system site-packages.
for flavour in isolated system; do
    venv=$work/venv-$flavour
    flags=--without-pip
    [ "$flavour" = system ] && flags="$flags --system-site-packages"
    "$python" -m venv $flags "$venv"
    site=$(echo "$venv"/lib/python3*/site-packages)
    printf 'def where():\n    return "%s"\n' "$flavour" >"$site/deploy_probe.py"
    pool_ini "$venv" >"$work/venv.ini"
    if ! start "$work/venv.ini" --http off; then
        not_ok "python = venv ($flavour)" "no READY: $(tail -n 5 "$work/daemon.log")"
        stop
        continue
    fi
    where=$(call python.deploy_probe.where '[]')
    numpy=$(call python.importlib.metadata.version '["numpy"]')
    stop
    if [ "$where" != "result \"$flavour\"" ]; then
        not_ok "python = venv ($flavour)" "the venv's own module: $where"
    elif [ "$flavour" = isolated ] && ! grep -q '^error python_exception' <<<"$numpy"; then
        not_ok "python = venv (isolated)" "Debian's numpy is visible: $numpy"
    elif [ "$flavour" = system ] && ! grep -q '^result "' <<<"$numpy"; then
        not_ok "python = venv (system-site-packages)" "Debian's numpy is not visible: $numpy"
    else
        ok "python = venv ($flavour site-packages): $numpy"
    fi
done

# An interpreter of another minor version is rejected with a message naming both versions.
other=
for candidate in /root/.pyenv/versions/3.1[02-9]*/bin/python3 /usr/bin/python3.1[02-9]; do
    [ -x "$candidate" ] && other=$candidate && break
done
linked=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [ -z "$other" ]; then
    skip "python = other version" "no Python other than $linked found here"
else
    pool_ini "$other" >"$work/other.ini"
    # The template exits at once; 5 s is plenty to see that no READY follows.
    ready_wait=50 start "$work/other.ini" --http off
    version=$("$other" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    if grep -q "Python '$other' is version $version, but snakepit-worker is linked with libpython $linked" \
        "$work/daemon.log" && ! grep -q '^READY' "$work/stdout"; then
        ok "python = $other ($version) rejected"
    else
        not_ok "python = $other rejected" "$(grep -m 3 -E 'error|READY' "$work/daemon.log" "$work/stdout")"
    fi
    stop
fi

echo "deploy: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
