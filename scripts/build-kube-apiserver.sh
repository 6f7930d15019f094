#!/usr/bin/env bash
# Build a real kube-apiserver (Kubernetes v1.20.2) for the test suite, from Debian bookworm's
# `kubernetes` source package with Debian's Go, and install etcd (Debian `etcd-server`).
#
#   scripts/build-kube-apiserver.sh          # build .tools/bin/kube-apiserver unless it is there
#   scripts/build-kube-apiserver.sh --check  # say whether it is there (exit 0) or not (exit 1)
#
# Only Debian's package registry is used, through apt's own client: the Go toolchain, a newer
# reflect2 and etcd from the machine's apt sources, the source package through a private deb-src
# list passed with -o Dir::... options (the machine's apt configuration is left as it is). Nothing
# else is downloaded: Kubernetes 1.20's source tarball carries its dependencies in vendor/.
#
# Exit status: 0 built (or already there), 3 this machine cannot build it (not Debian, not root,
# no apt: the reason is printed, the tests marked `apiserver` then skip), 1 the build failed.
# About 7 minutes on 2 cores the first time; ~1.5 GB of disk during the build, 106 MB afterwards
# (the source and Go's build cache are removed unless KEEP_BUILD_CACHE=1).
#
# Environment: TOOLS (default <repo>/.tools), KEEP_BUILD_CACHE=1, DEBIAN_MIRROR (default: the
# Debian mirror of the machine's apt sources, else http://deb.debian.org/debian); KUBE_APISERVER
# set: nothing is built (the tests use that binary).
set -euo pipefail

K8S_VERSION=v1.20.2
# Changes whenever the recipe changes what the binary does, so that a cached binary is rebuilt.
BUILD_ID="$K8S_VERSION+openapi-zero-value-fix"
K8S_COMMIT=faecb196815e248d3ecfb03c680a4507229c2a56   # upstream tag v1.20.2
SOURCE_PACKAGE=kubernetes
SOURCE_SUITE=bookworm          # bookworm's only version: 1.20.5+really1.20.2-1.1+deb12u1
EXIT_UNSUPPORTED=3

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TOOLS=${TOOLS:-$ROOT/.tools}
BIN=$TOOLS/bin
OUT=$BIN/kube-apiserver
WORK=$TOOLS/kube-apiserver-build

say() { printf '[kube-apiserver] %s\n' "$*"; }
now() { date +%s; }
STARTED=$(now)
since() { echo "$(( $(now) - $1 )) s"; }

built_version() {
  [ -x "$OUT" ] && "$OUT" --version 2>/dev/null | awk '{print $2}'
}
up_to_date() {
  [ "$(built_version || true)" = "$K8S_VERSION" ] && [ "$(cat "$OUT.build-id" 2>/dev/null)" = "$BUILD_ID" ]
}

if [ -n "${KUBE_APISERVER:-}" ]; then
  say "KUBE_APISERVER=$KUBE_APISERVER is set: the tests use it; nothing to build"
  exit 0
fi
have_etcd() { [ -n "${ETCD:-}" ] || command -v etcd >/dev/null || [ -x "$BIN/etcd" ]; }
if up_to_date && have_etcd; then
  say "$OUT is there ($BUILD_ID); nothing to build"
  exit 0
fi
if [ "${1:-}" = "--check" ]; then
  say "$OUT (or etcd) is missing; run scripts/build-kube-apiserver.sh (or make test-apiserver)"
  exit 1
fi

unsupported() {
  say "cannot build kube-apiserver on this machine: $*"
  say "the tests marked 'apiserver' will skip. To run them: on Debian (bookworm) as root, run"
  say "  make test-apiserver      (builds $OUT once, about 7 minutes)"
  say "or set KUBE_APISERVER=<a kube-apiserver v1.20 binary> and ETCD=<an etcd binary>."
  exit "$EXIT_UNSUPPORTED"
}
[ -r /etc/debian_version ] || unsupported "not Debian (no /etc/debian_version)"
command -v apt-get >/dev/null || unsupported "no apt-get"
[ "$(id -u)" = 0 ] || unsupported "not root (apt-get install needs root)"
[ -r /usr/share/keyrings/debian-archive-keyring.gpg ] || unsupported "no Debian archive keyring"

mkdir -p "$BIN" "$WORK"
# One build at a time (two `make` runs in parallel wait for each other).
exec 9>"$WORK/.lock"
flock 9
export DEBIAN_FRONTEND=noninteractive
apt_install() {
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get install -y -qq --no-install-recommends "$@" >/dev/null; }
}
if up_to_date; then
  have_etcd || { say "installing etcd (Debian etcd-server)"; apt_install etcd-server; }
  say "$OUT is there ($BUILD_ID); nothing to build"
  exit 0
fi
say "building kube-apiserver $K8S_VERSION from Debian's '$SOURCE_PACKAGE' source package ($SOURCE_SUITE)"
say "this takes about 7 minutes on 2 cores, once; the result is kept in $OUT"

# 1. Toolchain. Kubernetes 1.20 vendors github.com/modern-go/reflect2 1.0.1, whose unsafe map
#    iteration crashes on Go >= 1.18 (fixed in 1.0.2, same API); Debian ships 1.0.2 as a Go source
#    package, copied over vendor/ below.
T=$(now)
say "step 1/5: apt-get install golang-go golang-github-modern-go-reflect2-dev etcd-server"
apt_install golang-go golang-github-modern-go-reflect2-dev etcd-server
REFLECT2=/usr/share/gocode/src/github.com/modern-go/reflect2
[ -d "$REFLECT2" ] || { say "missing $REFLECT2 after installing golang-github-modern-go-reflect2-dev"; exit 1; }
say "step 1/5 done in $(since "$T"): $(/usr/bin/go version), $(/usr/bin/etcd --version 2>/dev/null | head -1)"

# 2. The source package, through a private deb-src list and private apt state.
T=$(now)
mirror=${DEBIAN_MIRROR:-}
if [ -z "$mirror" ]; then
  mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
    | grep -oE '(https?|file)://[^ ]+/debian/?( |$)' | grep -v security | head -1 | tr -d ' ' || true)
fi
mirror=${mirror:-http://deb.debian.org/debian}
say "step 2/5: apt-get source $SOURCE_PACKAGE from $mirror $SOURCE_SUITE (private deb-src list)"
APT_DIR=$WORK/apt
rm -rf "$APT_DIR"
mkdir -p "$APT_DIR/lists/partial" "$APT_DIR/sources.list.d" "$WORK/src"
# apt downloads as its sandbox user where it can write.
if id _apt >/dev/null 2>&1; then chown _apt "$APT_DIR/lists/partial" "$WORK/src"; fi
cat > "$APT_DIR/sources.list.d/kubernetes-src.sources" <<EOF
Types: deb-src
URIs: $mirror
Suites: $SOURCE_SUITE
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
APT_OPTS=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$APT_DIR/sources.list.d"
          -o "Dir::State::Lists=$APT_DIR/lists")
apt-get "${APT_OPTS[@]}" update -qq
rm -f "$WORK"/src/kubernetes_*
(cd "$WORK/src" && apt-get "${APT_OPTS[@]}" source --download-only -qq "$SOURCE_PACKAGE" >/dev/null)
ORIG=$(ls "$WORK"/src/kubernetes_*.orig.tar.* 2>/dev/null | head -1)
[ -n "$ORIG" ] || { say "no orig tarball downloaded in $WORK/src"; exit 1; }
# Only the upstream tarball is built (not Debian's patches): the server under test is upstream v1.20.2.
KDIR=$WORK/src/kubernetes-${K8S_VERSION#v}
rm -rf "$KDIR"
tar xf "$ORIG" -C "$WORK/src"
[ -d "$KDIR/cmd/kube-apiserver" ] || { say "$ORIG has no kubernetes-${K8S_VERSION#v}/cmd/kube-apiserver"; exit 1; }
rm -rf "$KDIR/vendor/github.com/modern-go/reflect2"
cp -r "$REFLECT2" "$KDIR/vendor/github.com/modern-go/reflect2"
rm -f "$KDIR/vendor/github.com/modern-go/reflect2/go.mod"
# OpenAPI validation of custom resources compares two reflect.Values with DeepEqual to spot "null".
# That never matched before Go 1.16; since Go 1.16 reflect.Zero shares one zero value, so with this
# Go every empty string in a custom resource (and every `default: ""` in a CRD) is refused as
# "Invalid value: \"null\"". Kubernetes 1.20 was released built with Go 1.15, where "" is valid;
# upstream removed the check for Go 1.16 (kubernetes/kube-openapi#230, kubernetes/kubernetes#99804).
# The same one-line change here keeps the server behaving as the released 1.20 did.
zero_check='if data == nil || reflect.DeepEqual(reflect.Zero(reflect.TypeOf(data)), reflect.ValueOf(data)) {'
for f in vendor/k8s.io/kube-openapi/pkg/validation/validate/type.go vendor/github.com/go-openapi/validate/type.go; do
  grep -qF "$zero_check" "$KDIR/$f" || { say "$f: the zero-value check to remove is not there"; exit 1; }
  sed -i "s/if data == nil || reflect.DeepEqual(reflect.Zero(reflect.TypeOf(data)), reflect.ValueOf(data)) {/if data == nil {/" "$KDIR/$f"
done
GOPATH_DIR=$WORK/gopath
mkdir -p "$GOPATH_DIR/src/k8s.io"
ln -sfn "$KDIR" "$GOPATH_DIR/src/k8s.io/kubernetes"
say "step 2/5 done in $(since "$T"): $(basename "$ORIG") unpacked"

# 3. Go environment as Kubernetes 1.20's own hack/lib/init.sh: GOPATH mode, vendored packages,
#    no module proxy (nothing is fetched).
export GO111MODULE=off GOPATH=$GOPATH_DIR GOCACHE=$WORK/gocache CGO_ENABLED=0 GOFLAGS= GOPROXY=off
cd "$GOPATH_DIR/src/k8s.io/kubernetes"

# 4. The one generated file the tarball lacks (pkg/generated/openapi/zz_generated.openapi.go; its
#    absence gives "undefined: openapi.GetOpenAPIDefinitions"), made with the vendored openapi-gen
#    over the packages Makefile.generated_files feeds it: those tagged +k8s:openapi-gen=.
T=$(now)
say "step 3/5: openapi-gen (generated OpenAPI definitions)"
/usr/bin/go build -o "$WORK/openapi-gen" k8s.io/kubernetes/vendor/k8s.io/kube-openapi/cmd/openapi-gen
find -H . \( -not \( \( -path './_*' -o -path './.*' -o -path ./vendor \) -prune \) \) -type f -name '*.go' \
  | sed -e 's|^./staging/src|vendor|' -e 's|/[^/]*$||' -e 's|^./||' | LC_ALL=C sort -u > "$WORK/go-dirs"
# shellcheck disable=SC2046
inputs=$(find $(cat "$WORK/go-dirs") -maxdepth 1 -type f -name '*.go' | xargs grep -l '^// *+k8s:' \
  | grep -v -E '^vendor/k8s.io/(code-generator|sample-apiserver)/' | xargs grep -l '+k8s:openapi-gen=' \
  | xargs -n1 dirname | LC_ALL=C sort -u | sed 's|^|k8s.io/kubernetes/|' | paste -sd,)
"$WORK/openapi-gen" --logtostderr -i "$inputs" -p k8s.io/kubernetes/pkg/generated/openapi \
  -O zz_generated.openapi -h vendor/k8s.io/code-generator/hack/boilerplate.go.txt \
  -r "$WORK/openapi-violations.report" 2>"$WORK/openapi-gen.log" \
  || { tail -20 "$WORK/openapi-gen.log"; exit 1; }
[ -s pkg/generated/openapi/zz_generated.openapi.go ] || { say "openapi-gen wrote nothing"; exit 1; }
say "step 3/5 done in $(since "$T")"

# 5. kube-apiserver itself; both version packages get the release version, or the server reports
#    v0.0.0-master.
T=$(now)
say "step 4/5: go build k8s.io/kubernetes/cmd/kube-apiserver (the long step: about 6 minutes)"
ldflags="-s -w"
for pkg in client-go/pkg/version component-base/version; do
  v=k8s.io/kubernetes/vendor/k8s.io/$pkg
  ldflags="$ldflags -X $v.gitVersion=$K8S_VERSION -X $v.gitMajor=1 -X $v.gitMinor=20"
  ldflags="$ldflags -X $v.gitTreeState=clean -X $v.gitCommit=$K8S_COMMIT"
done
/usr/bin/go build -ldflags "$ldflags" -o "$OUT.partial" k8s.io/kubernetes/cmd/kube-apiserver
mv "$OUT.partial" "$OUT"
echo "$BUILD_ID" > "$OUT.build-id"
say "step 4/5 done in $(since "$T"): $("$OUT" --version)"

T=$(now)
if [ "${KEEP_BUILD_CACHE:-}" = 1 ]; then
  say "step 5/5: keeping the source and Go's build cache in $WORK (KEEP_BUILD_CACHE=1)"
else
  say "step 5/5: removing the source and Go's build cache ($(du -sh "$WORK" 2>/dev/null | cut -f1))"
  chmod -R u+w "$WORK/gocache" 2>/dev/null || true
  rm -rf "$WORK/src" "$WORK/gopath" "$WORK/gocache" "$WORK/apt" "$WORK/openapi-gen" "$WORK/go-dirs"
fi
up_to_date || { say "$OUT does not report $K8S_VERSION"; exit 1; }
say "built $OUT ($K8S_VERSION, $(du -h "$OUT" | cut -f1)) in $(since "$STARTED") total"
