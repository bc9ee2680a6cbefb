#!/bin/sh
# Refreshes the vendored MQTT.js browser bundle from the npm package `mqtt`
# at the pinned version (npm pack: the registry npm is configured with).
# Run from anywhere; then check the page with `make web-test`.
set -eu
VERSION=${1:-5.16.0}
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
npm pack --silent "mqtt@$VERSION" >/dev/null
tar xzf "mqtt-$VERSION.tgz"
cp package/dist/mqtt.esm.js "$here/mqtt.esm.js"
cp package/LICENSE.md "$here/mqtt.LICENSE.md"
echo "$VERSION" > "$here/VERSION"
echo "vendored mqtt $VERSION: $(wc -c < "$here/mqtt.esm.js") bytes"
