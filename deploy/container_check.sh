#!/usr/bin/env bash
# Start the image, wait (bounded) for /health to say ok, embed one text over TCP, stop it.
# Usage: deploy/container_check.sh IMAGE PORT   (PODMAN names the podman command line)
# The starter catalog needs no network; the container uses the host's network namespace here
# (as the build does), so it listens on 127.0.0.1:PORT only.
set -euo pipefail
image=$1 port=$2
podman=${PODMAN:-podman}
name=hero-embedder-check-$$
$podman run -d --rm --name "$name" --network=host \
    -e EMBEDDER_CATALOG=starter -e HF_HUB_OFFLINE=1 -e EMBEDDER_BIND="127.0.0.1:$port" \
    "$image" >/dev/null
trap '$podman stop -t 40 "$name" >/dev/null 2>&1 || true' EXIT
url=http://127.0.0.1:$port
for _ in $(seq 1 180); do
    health=$(curl -s --max-time 5 "$url/health" || true)
    case $health in *'"status":"ok"'*) break ;; esac
    if ! $podman container exists "$name"; then echo "container exited"; exit 1; fi
    sleep 1
done
echo "GET $url/health -> $health"
case $health in *'"status":"ok"'*) ;; *) $podman logs "$name" | tail -30; exit 1 ;; esac
embedded=$(curl -sS --max-time 30 "$url/v1/embeddings" -H 'Content-Type: application/json' \
    -d '{"input": ["hello from the container"], "model": "all-minilm-l6-v2"}')
case $embedded in *'"embedding"'*) echo "POST $url/v1/embeddings -> 200, one embedding" ;;
    *) echo "embedding failed: $embedded"; exit 1 ;; esac
$podman exec "$name" embedder status | head -1
