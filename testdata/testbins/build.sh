#!/usr/bin/env bash
# Builds the real components that have no Debian package (see README.md here)
# once into a cache folder and reuses them: the folder's name carries a hash
# of the component's module files, so a version bump rebuilds and nothing else
# does. Each component is its own Go module: never part of the agent's go.mod.
#
#   build.sh NAME...        build what is missing (all when no NAME)
#   build.sh --path NAME    print the folder NAME's binaries live in (built or not)
#   build.sh --list         print the names (the default ones, then extra ones
#                           built only when named: vmagent)
#
# Cache: $AGENT_TESTBINS, else ${XDG_CACHE_HOME:-$HOME/.cache}/agent-testbins.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="${AGENT_TESTBINS:-${XDG_CACHE_HOME:-$HOME/.cache}/agent-testbins}"
all=(otelcol victorialogs prometheus3 jaeger kube-apiserver)
# Built only when named (`make bench-relay` does): not needed by any test.
extra=(vmagent)

# key NAME: a hash of what decides what NAME builds into: its module files and
# its build function (flags and tags) below.
key() {
	{
		(cd "$here" && find "$1" -type f ! -name '*.md' ! -path '*/build/*' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
		declare -f "build_$1"
	} | sha256sum | cut -c1-12
}

dir_of() { echo "$cache/$1-$(key "$1")"; }

gobuild() { # gobuild OUT PKG [ldflags [tags]]
	CGO_ENABLED=0 go build -mod=mod -trimpath -tags="${4:-}" -ldflags="-s -w ${3:-}" -o "$1" "$2"
}

# build_NAME OUT: puts NAME's binaries into OUT, run inside NAME's module.
build_prometheus3() {
	# Module v0.316.0 is Prometheus 3.16.0; say so in --version and buildinfo.
	local v="-X github.com/prometheus/common/version.Version=3.16.0 -X github.com/prometheus/common/version.Revision=v0.316.0 -X github.com/prometheus/common/version.Branch=HEAD"
	# remove_all_sd keeps file_sd, http_sd and static targets (all the tests
	# use) and leaves out the cloud discoveries, which are most of the build.
	gobuild "$1/prometheus" github.com/prometheus/prometheus/cmd/prometheus "$v" remove_all_sd
	gobuild "$1/promtool" github.com/prometheus/prometheus/cmd/promtool "$v" remove_all_sd
}
build_jaeger() { gobuild "$1/jaeger" github.com/jaegertracing/jaeger/cmd/jaeger; }
build_kube-apiserver() {
	# kubectl and client-go refuse a server whose version they cannot parse.
	gobuild "$1/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver \
		"-X k8s.io/component-base/version.gitVersion=v1.34.4 -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=34"
}
build_vmagent() {
	gobuild "$1/vmagent" github.com/VictoriaMetrics/VictoriaMetrics/app/vmagent \
		"-X github.com/VictoriaMetrics/VictoriaMetrics/lib/buildinfo.Version=vmagent-v1.151.0"
}
build_victorialogs() { gobuild "$1/victoria-logs" github.com/VictoriaMetrics/VictoriaLogs/app/victoria-logs; }
build_otelcol() {
	local gen
	gen="$(mktemp -d)"
	sed "s#output_path: ./build#output_path: $gen#" manifest.yaml >"$gen.yaml"
	CGO_ENABLED=0 go tool builder --config="$gen.yaml" --skip-compilation >/dev/null
	(cd "$gen" && CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$1/otelcol" .)
	rm -rf "$gen" "$gen.yaml"
}

build() {
	local name="$1" out tmp start
	out="$(dir_of "$name")"
	[ -d "$out" ] && return 0
	mkdir -p "$cache"
	exec 9>"$cache/.$name.lock"
	flock 9 # a concurrent build of the same component waits, then finds it
	if [ -d "$out" ]; then exec 9>&-; return 0; fi
	echo "testbins: building $name into $out (once; later runs reuse it)" >&2
	start=$(date +%s)
	tmp="$out.tmp.$$"
	rm -rf "$tmp" && mkdir -p "$tmp"
	(cd "$here/$name" && "build_$name" "$tmp")
	mv "$tmp" "$out"
	echo "testbins: built $name in $(($(date +%s) - start))s" >&2
	exec 9>&-
}

case "${1:-}" in
--path) dir_of "$2" ;;
--list) printf '%s\n' "${all[@]}" "${extra[@]}" ;;
"") for n in "${all[@]}"; do build "$n"; done ;;
*) for n in "$@"; do build "$n"; done ;;
esac
