#!/usr/bin/env bash
# docker-compose.yml is valid (no Docker engine here, so `config` is as far as it goes)
# and describes what the README promises: three nodes, two disks each, seeds by service
# name, the secret from the env file, published ports and a health check.
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v docker-compose >/dev/null || { echo "FAIL: docker-compose missing (tools/setup installs it)"; exit 1; }
docker-compose -f docker-compose.yml config -q
out=$(docker-compose -f docker-compose.yml config)
fail() { echo "FAIL: $*"; exit 1; }
for n in 1 2 3; do
  grep -q "^  node$n:" <<<"$out" || fail "no service node$n"
  grep -q "RINGSTORE_LISTEN: node$n:3000" <<<"$out" || fail "node$n does not listen on its service name"
  grep -q "node$n-disk1" <<<"$out" && grep -q "node$n-disk2" <<<"$out" || fail "node$n lacks two disk volumes"
  grep -q "published: 300$n" <<<"$out" || grep -q "300$n:3000" <<<"$out" || fail "node$n port not published"
done
[ "$(grep -c 'RINGSTORE_SECRET: change-this-shared-secret' <<<"$out")" -eq 3 ] || fail "the secret does not reach every node from docker/cluster.env"
[ "$(grep -c 'RINGSTORE_SEEDS: node1:3000,node2:3000' <<<"$out")" -eq 3 ] || fail "seeds are not service names"
[ "$(grep -c '_/status' <<<"$out")" -eq 3 ] || fail "every node needs a health check on /_/status"
grep -q "tools/setup --build-only" Dockerfile || fail "the Dockerfile does not build with tools/setup"
grep -q "^FROM debian:bookworm AS build" Dockerfile || fail "the Dockerfile is not a bookworm multi-stage build"
echo "compose ok"
