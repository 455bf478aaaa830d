#!/usr/bin/env bash
# make test-docker: the CPU image of docker/Dockerfile built and run for real, on a machine with apt
# and no container registry (docker/README.md, "make test-docker"). In order:
#   1. installs Debian's docker.io, docker-compose and mmdebstrap when one is missing, and removes
#      what it installed at the end (KEEP_PACKAGES=1 keeps them);
#   2. starts its own dockerd: data root, exec root and socket under build/docker/, no iptables
#      rules and no bridge; builds use the host's network, containers none (or the host's);
#   3. makes the base image from Debian's packages and an image of the host's torch wheels;
#   4. builds docker/Dockerfile with build arguments only, the CA bundle passed as a build secret;
#   5. as the host user's UID: the ops' CPU tests, the synthetic scenes written to a host folder,
#      the demo trained on them (mounted read-only) and evaluated, outputs in a host folder; then
#      the same training through the compose file's train service and docker/compose.cpu.yaml;
#   6. stops the daemon by its PID, also on failure or Ctrl-C.
# The images stay in build/docker/data-root, so a second run rebuilds only what changed;
# `make clean-docker` removes them.
set -euo pipefail
cd "$(dirname "$0")/.."
# dockerd, apt and mmdebstrap need root; SUDO_UID then still names the user.
if [ "$(id -u)" != 0 ]; then exec sudo --preserve-env=KEEP_PACKAGES,DOCKER_TEST_ITERS,CA_BUNDLE bash "$0"; fi

WORK=$PWD/build/docker
RUN=$WORK/run
export DOCKER_HOST=unix://$WORK/docker.sock
# Debian's client: with DOCKER_BUILDKIT=1 it builds through dockerd 20.10's BuildKit, where a newer
# client elsewhere on PATH would ask for the buildx plugin.
DOCKER=/usr/bin/docker
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
TORCH_VERSION=$(sed -n 's/^torch==//p' constraints.txt)
BASE_IMAGE=maskrcnn-base:bookworm
TORCH_WHEELS=maskrcnn-wheels:$TORCH_VERSION
IMAGE=maskrcnn:cpu
ITERS=${DOCKER_TEST_ITERS:-50}
# The container runs as the user who called make; as root, as UID 1000, so that a permission
# problem cannot hide behind root.
RUN_UID=${SUDO_UID:-0} RUN_GID=${SUDO_GID:-0}
if [ "$RUN_UID" = 0 ]; then RUN_UID=1000 RUN_GID=1000; fi

step() { printf '\n== %s (%d s)\n' "$*" "$SECONDS"; }
fail() { echo "test-docker: $*" >&2; exit 1; }

NEW_PACKAGES="" DOCKERD_PID="" MADE_BY_DOCKERD="" GROUP_CREATED=""
cleanup() {
    local status=$?
    if [ -n "$DOCKERD_PID" ]; then
        step "stopping dockerd (PID $DOCKERD_PID)"
        kill "$DOCKERD_PID" 2>/dev/null && wait "$DOCKERD_PID" || true
        # dockerd leaves its network namespace's mount behind (exec/netns/default).
        awk -v w="$WORK/" 'index($2, w) == 1 {print $2}' /proc/self/mounts | sort -r | xargs -r umount
    fi
    # What dockerd makes outside its roots whatever the flags: its identity key, the plugin folder
    # and the shims' sockets; removed if it made them (and nothing else is in them).
    for made in $MADE_BY_DOCKERD; do
        if [ -f "$made" ]; then rm -f "$made"; else find "$made" -depth -type d -empty -delete 2> /dev/null || true; fi
    done
    if [ -n "$NEW_PACKAGES" ] && [ "${KEEP_PACKAGES:-0}" != 1 ]; then
        step "removing what was installed: $NEW_PACKAGES"
        # Only if apt would remove nothing else (a package installed meanwhile may depend on them).
        local others
        others=$(apt-get purge -s $NEW_PACKAGES | sed -n 's/^Purg \([^ ]*\).*/\1/p' | grep -vxF -f <(tr ' ' '\n' <<< "$NEW_PACKAGES") || true)
        if [ -n "$others" ]; then
            echo "test-docker: kept the packages: removing them would also remove $others" >&2
        else
            DEBIAN_FRONTEND=noninteractive apt-get purge -y -q $NEW_PACKAGES > "$WORK/apt-purge.log" || status=1
            # docker.io's postinst adds the group; its purge keeps it.
            [ -z "$GROUP_CREATED" ] || groupdel docker
        fi
    fi
    [ "$status" = 0 ] && step "test-docker passed" || step "test-docker FAILED"
    exit "$status"
}
trap cleanup EXIT
mkdir -p "$WORK"

# ---- 1. Packages ------------------------------------------------------------------------------
PACKAGES="docker.io docker-compose mmdebstrap"
if ! command -v dockerd > /dev/null || ! command -v docker-compose > /dev/null || ! command -v mmdebstrap > /dev/null; then
    step "installing $PACKAGES"
    apt-get update -q > "$WORK/apt.log"
    # Only the packages apt adds (an "Inst name [old version]" line is an upgrade), to remove them later.
    NEW_PACKAGES=$(apt-get install -s --no-install-recommends $PACKAGES | sed -n 's/^Inst \([^ ]*\) (.*/\1/p' | xargs)
    getent group docker > /dev/null || GROUP_CREATED=1
    # The package would start a system dockerd with default networking: policy-rc.d forbids it.
    [ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && POLICY_CREATED=1; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $PACKAGES >> "$WORK/apt.log"
    [ -z "${POLICY_CREATED:-}" ] || rm -f /usr/sbin/policy-rc.d
fi

# ---- 2. dockerd -------------------------------------------------------------------------------
[ ${#WORK} -lt 60 ] || fail "the path $WORK is too long for dockerd's sockets: use a shorter checkout path"
if [ -s "$WORK/dockerd.pid" ] && kill -0 "$(cat "$WORK/dockerd.pid")" 2> /dev/null; then
    fail "a dockerd of an earlier run still runs (PID $(cat "$WORK/dockerd.pid")): stop it first"
fi
for path in /etc/docker/key.json /etc/docker /run/docker /run/containerd; do
    [ -e "$path" ] || MADE_BY_DOCKERD+=" $path"
done
RULES_BEFORE=$(iptables -S 2> /dev/null; iptables -t nat -S 2> /dev/null) || true
step "starting dockerd (log: $WORK/dockerd.log)"
dockerd --data-root="$WORK/data-root" --exec-root="$WORK/exec" --pidfile="$WORK/dockerd.pid" \
    -H "$DOCKER_HOST" --iptables=false --bridge=none > "$WORK/dockerd.log" 2>&1 &
DOCKERD_PID=$!
for _ in $(seq 60); do
    $DOCKER info > /dev/null 2>&1 && break
    kill -0 "$DOCKERD_PID" 2> /dev/null || { tail -5 "$WORK/dockerd.log"; DOCKERD_PID=""; fail "dockerd did not start"; }
    sleep 1
done

# ---- 3. Base and wheel images -----------------------------------------------------------------
if ! $DOCKER image inspect "$BASE_IMAGE" > /dev/null 2>&1; then
    step "base image $BASE_IMAGE from Debian's packages (mmdebstrap)"
    # A venv on PATH, as the PyTorch images have: Debian's own Python refuses pip installs (PEP 668).
    mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,python3-dev,g++ \
        --customize-hook='chroot "$1" python3 -m venv /opt/venv' bookworm - http://deb.debian.org/debian \
        | $DOCKER import --change 'ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            - "$BASE_IMAGE"
fi
if ! $DOCKER image inspect "$TORCH_WHEELS" > /dev/null 2>&1; then
    step "wheel image $TORCH_WHEELS: torch $TORCH_VERSION and its dependencies through the host's pip"
    # For the base image's Python (Debian 12: 3.11, glibc 2.36); the host's pip configuration
    # decides where they come from (here: wheels on the local disk).
    platforms=$(for minor in $(seq 36 -1 5); do printf -- '--platform manylinux_2_%s_x86_64 ' "$minor"; done)
    rm -rf "$WORK/wheels"
    python3 -m pip download -q -c constraints.txt --only-binary=:all: --python-version 3.11 \
        --implementation cp $platforms --platform manylinux2014_x86_64 -d "$WORK/wheels" torch torchvision
    tar -C "$WORK/wheels" -c . | $DOCKER import - "$TORCH_WHEELS"
    rm -rf "$WORK/wheels"
fi

# ---- 4. The image -----------------------------------------------------------------------------
step "building $IMAGE from docker/Dockerfile"
DOCKER_BUILDKIT=1 $DOCKER build --network=host --secret id=ca-certificates,src="$CA_BUNDLE" \
    --build-arg BASE_IMAGE="$BASE_IMAGE" --build-arg TORCH_WHEELS="$TORCH_WHEELS" \
    --build-arg TORCH_VERSION="$TORCH_VERSION" --build-arg FORCE_CUDA=0 --build-arg MAX_JOBS=2 \
    --build-arg USER_ID="$RUN_UID" --build-arg GROUP_ID="$RUN_GID" -f docker/Dockerfile -t "$IMAGE" .
# The image a rebuild replaced, now untagged.
$DOCKER image prune -f > /dev/null

# ---- 5. In containers, as the host user ---------------------------------------------------------
rm -rf "$RUN" && mkdir -p "$RUN/data" "$RUN/outputs" "$RUN/empty" && chown -R "$RUN_UID:$RUN_GID" "$RUN"
# 1 GB of /dev/shm: the loader's worker hands batches over in shared memory (Docker gives 64 MB).
in_container() { $DOCKER run --rm --network=none --user "$RUN_UID:$RUN_GID" --shm-size=1g "$@"; }
MOUNTS=(-v "$RUN/data/synthetic_simple:/workspace/maskrcnn/datasets/synthetic_simple:ro"
    -v "$RUN/outputs:/workspace/maskrcnn/outputs")
TRAIN=(experiment=demo "solver.max_iter=$ITERS" solver.warmup_iters=10 "solver.checkpoint_period=$ITERS")

step "the ops' CPU tests"
in_container --entrypoint python "$IMAGE" -m pytest -q -p no:cacheprovider tests/ops -m "not cuda"
step "synthetic scenes into $RUN/data"
in_container -v "$RUN/data:/data" --entrypoint python "$IMAGE" tools/make_synthetic.py \
    --out /data/synthetic_simple --format coco --scene simple --num-images 40
step "training the demo for $ITERS iterations"
in_container "${MOUNTS[@]}" "$IMAGE" "${TRAIN[@]}" hydra.run.dir=outputs/docker
step "evaluating it"
in_container "${MOUNTS[@]}" --entrypoint python "$IMAGE" tools/eval.py checkpoint=outputs/docker/model_final.pt \
    2>&1 | tee "$RUN/eval.log"
step "the same through compose: docker/compose.yaml + docker/compose.cpu.yaml, service train"
COCO_ROOT=$RUN/empty VOC_ROOT=$RUN/empty OUTPUTS_DIR=$RUN/outputs MULTIRUN_DIR=$RUN/outputs \
    SYNTHETIC_ROOT=$RUN/data/synthetic_simple USER_ID=$RUN_UID GROUP_ID=$RUN_GID \
    docker-compose -f docker/compose.yaml -f docker/compose.cpu.yaml run --rm train \
    "${TRAIN[@]}" hydra.run.dir=outputs/compose

step "checks"
for run in docker compose; do
    python3 -c 'import json, sys; m = json.load(open(sys.argv[1])); assert m["iteration"] == int(sys.argv[2]), m
print(sys.argv[1], "iteration", m["iteration"], "box AP", m["bbox/AP"], "mask AP", m["segm/AP"])' \
        "$RUN/outputs/$run/metrics.json" "$ITERS"
done
grep -q "segm/AP" "$RUN/eval.log" || fail "tools/eval.py printed no mask AP"
foreign=$(find "$RUN/outputs" ! -uid "$RUN_UID" | head -3)
[ -z "$foreign" ] || fail "outputs not owned by UID $RUN_UID: $foreign"
[ -z "$($DOCKER ps -aq)" ] || fail "containers left behind: $($DOCKER ps -a)"
[ -z "$($DOCKER network ls -q --filter type=custom)" ] || fail "networks left behind: $($DOCKER network ls)"
RULES_AFTER=$(iptables -S 2> /dev/null; iptables -t nat -S 2> /dev/null) || true
[ "$RULES_BEFORE" = "$RULES_AFTER" ] || fail "the iptables rules changed"
if ip link show docker0 > /dev/null 2>&1; then fail "a docker0 bridge exists"; fi
$DOCKER image ls
du -sh "$WORK/data-root" 2> /dev/null || true
