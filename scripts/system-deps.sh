#!/usr/bin/env bash
# Install the Debian packages the tests use, where this machine allows it
# (apt-get with root or password-less sudo). Where it cannot, the tests that
# need them skip with a message saying how to get them (and fail under CI=true).
set -u
packages=(dataset-fashion-mnist chromium)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  echo "system-deps: no apt-get here; tests needing ${missing[*]} will skip" >&2
  exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
  sudo=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  sudo=(sudo -n)
else
  echo "system-deps: need root or sudo to install ${missing[*]}; tests needing them will skip" >&2
  exit 0
fi
echo "system-deps: installing ${missing[*]}"
if ! { "${sudo[@]}" apt-get update -qq && \
       DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null; }; then
  echo "system-deps: could not install ${missing[*]}; tests needing them will skip" >&2
fi
exit 0
