# Shared by scripts/build-curl, build-civetweb, build-prometheus-cpp and build-boringssl: fetch a
# pinned Debian source package with a private apt configuration, verify its .dsc hash, unpack it
# with Debian's patches, and install a build into a cache directory keyed by version and recipe.
# Sourced (not run); the caller sets `set -euo pipefail`.
#
#   debsrc_init NAME "$@"            parse --prefix (print only the prefix on stdout)
#   debsrc_prefix DIRNAME RECIPE...  set $prefix=$cache_root/DIRNAME-<sha256(RECIPE...)[:12]>
#   debsrc_cached FILE               if $prefix/.built and $prefix/FILE exist: print $prefix, exit 0
#   debsrc_fetch SRCPKG VERSION SHA  download into a private work dir, check the .dsc's sha256,
#                                    dpkg-source -x into $work/src (sets $work, $dsc_sha256)
#   debsrc_finish VERSION            stamp $dest$prefix, rename it into place, print $prefix
#
# The private apt configuration holds deb-src twins of the machine's own deb entries, and its
# own lists and cache directories; the machine's apt configuration and state are not touched.
# The cache: ${TROUSSEAU_CACHE:-~/.cache/trousseau}/<name>-<version>-<recipe hash>/ with a
# stamp file written last, moved into place with one rename: a concurrent build of the same
# recipe finds either nothing or a complete prefix.

debsrc_init() {
  DEBSRC_NAME=$1; shift
  prefix_only=0
  [ "${1:-}" = "--prefix" ] && prefix_only=1
  cache_root=${TROUSSEAU_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/trousseau}
  DEBSRC_START=$(date +%s)
  work=""
}

log() { if [ "$prefix_only" = 1 ]; then echo "$DEBSRC_NAME: $*" >&2; else echo "$DEBSRC_NAME: $*"; fi; }
die() { echo "$DEBSRC_NAME: $*" >&2; exit 1; }

debsrc_prefix() {
  local dirname=$1; shift
  recipe=$(printf '%s\n' "$@" | sha256sum | cut -c1-12)
  prefix=$cache_root/$dirname-$recipe
  dest=""
}

debsrc_cached() {
  if [ -f "$prefix/.built" ] && [ -f "$prefix/$1" ]; then
    log "cached: $prefix"
    echo "$prefix"
    exit 0
  fi
}

debsrc_require() {
  local tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null || die "$tool is missing (scripts/install-deps)"
  done
}

debsrc_fetch() {
  local pkg=$1 version=$2 want=$3 f apt_opts
  debsrc_require apt-get dpkg-source
  mkdir -p "$cache_root"
  work=$(mktemp -d "$cache_root/.$pkg-build.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  dest=$work/dest  # DESTDIR: installed as $dest$prefix, renamed into place when complete
  mkdir -p "$work/apt/parts" "$work/apt/lists/partial" "$work/apt/cache/archives/partial" "$work/dl"
  : > "$work/apt/sources.list"
  if [ -f /etc/apt/sources.list ]; then
    sed -n 's/^[[:space:]]*deb[[:space:]]/deb-src /p' /etc/apt/sources.list >> "$work/apt/sources.list"
  fi
  for f in /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] && sed -n 's/^[[:space:]]*deb[[:space:]]/deb-src /p' "$f" >> "$work/apt/sources.list"
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] && sed 's/^Types:[[:space:]]*deb[[:space:]]*$/Types: deb-src/' "$f" > "$work/apt/parts/$(basename "$f")"
  done
  apt_opts=(-o "Dir::Etc::SourceList=$work/apt/sources.list" -o "Dir::Etc::SourceParts=$work/apt/parts"
            -o "Dir::State::Lists=$work/apt/lists" -o "Dir::Cache=$work/apt/cache"
            -o "APT::Sandbox::User=root" -o "Debug::NoLocking=1" -qq)
  log "fetching Debian source package $pkg=$version (private apt lists in $work/apt)"
  apt-get "${apt_opts[@]}" update >&2
  (cd "$work/dl" && apt-get "${apt_opts[@]}" source --download-only "$pkg=$version" >&2)
  local dsc=$work/dl/${pkg}_${version#*:}.dsc
  dsc_sha256=$(sha256sum "$dsc" | cut -d' ' -f1)
  [ "$dsc_sha256" = "$want" ] || die "$(basename "$dsc") sha256 $dsc_sha256 does not match the pinned $want"
  log ".dsc sha256 verified: $dsc_sha256"
  # dpkg-source checks the tarballs against the .dsc's checksums and applies debian/patches.
  (cd "$work" && dpkg-source -x "$dsc" src >&2)
}

# Runs a build step with its output in $work/NAME.log, printing the log's tail on failure.
debsrc_step() {
  local name=$1; shift
  "$@" >>"$work/$name.log" 2>&1 || { tail -40 "$work/$name.log" >&2; die "$name failed"; }
}

debsrc_finish() {
  local version=$1
  printf 'version=%s\ndsc_sha256=%s\nrecipe=%s\nbuilt=%s\n' "$version" "$dsc_sha256" "$recipe" \
    "$(date -u +%Y-%m-%dT%H:%M:%SZ)" > "$dest$prefix/.built"
  rm -rf "$prefix"
  mv -T "$dest$prefix" "$prefix" 2>/dev/null || [ -f "$prefix/.built" ]
  log "built $version in $(( $(date +%s) - DEBSRC_START )) s: $prefix"
  echo "$prefix"
}
