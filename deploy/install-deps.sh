#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Install the Debian 12 packages that building, running and testing snakepit-cnode need.
set -eu
packages=(
    build-essential meson ninja-build pkg-config bc curl procps iproute2
    erlang-base erlang-dev elixir
    libev-dev libhiredis-dev libinih-dev libmicrohttpd-dev libcriterion-dev libsystemd-dev
    python3-dev python3-numpy python3-pandas python3-pytest python3-sklearn
    redis-server prometheus
)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    sudo=sudo
else
    sudo=
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
