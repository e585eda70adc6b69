# Shared by scripts/build-control-plane.sh and scripts/build-node.sh (source it, do not run it):
# the Go wrapper module that builds commands of k8s.io/kubernetes from the module proxy, and
# the version ldflags every such binary needs (without them it reports v0.0.0-master).

# kube_wrapper_module DIR VERSION CMD...
# Writes DIR/go.mod and DIR/tools.go for a module requiring k8s.io/kubernetes VERSION that
# imports k8s.io/kubernetes/cmd/CMD for each CMD, then tidies it. kubernetes' go.mod requires
# its staging modules at v0.0.0 and replaces them with local paths; a consumer must replace
# each with the published v0.Y.Z tag instead.
kube_wrapper_module() {
  local dir="$1" version="$2"
  shift 2
  local minor_patch="${version#v1.}"          # 36.3
  local staging_version="v0.${minor_patch}"   # v0.36.3
  local upstream_mod
  mkdir -p "$dir"
  upstream_mod="$(go mod download -json "k8s.io/kubernetes@$version" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
  {
    echo "module kvscale.local/kube-build"
    echo
    grep -E '^go [0-9]' "$upstream_mod"
    grep -E '^godebug ' "$upstream_mod" || true
    echo
    echo "require k8s.io/kubernetes $version"
    echo
    echo "replace ("
    grep -E '^\s+k8s\.io/[A-Za-z0-9._-]+ v0\.0\.0(\s|$)' "$upstream_mod" | awk -v v="$staging_version" '{print "\t" $1 " => " $1 " " v}'
    echo ")"
  } > "$dir/go.mod"
  {
    printf '//go:build tools\n\npackage tools\n\nimport (\n'
    local cmd
    for cmd in "$@"; do printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$cmd"; done
    printf ')\n'
  } > "$dir/tools.go"
  (cd "$dir" && go mod tidy -e >&2)
}

# kube_ldflags VERSION: the -X flags that make /version and --version report VERSION.
kube_ldflags() {
  local version="$1" minor_patch="${1#v1.}" flags="" pkg
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags="$flags -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=${minor_patch%%.*}"
    flags="$flags -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  echo "$flags"
}

# kube_build DIR VERSION BIN CMD: builds k8s.io/kubernetes/cmd/CMD in the wrapper module DIR
# into BIN/CMD (atomically: a killed build leaves no half-written binary).
kube_build() {
  local dir="$1" version="$2" bin="$3" cmd="$4"
  (cd "$dir" && go build -trimpath -ldflags "-s -w $(kube_ldflags "$version")" -o "$bin/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd" >&2)
  mv "$bin/$cmd.tmp" "$bin/$cmd"
}
