#!/usr/bin/env bash
# setup_arm_emulation.sh [CACHE_DIR] [ROOT_DIR]
#
# Sets up everything slimtvm needs to cross-compile for aarch64 and to run the results under
# qemu user-mode emulation on an x86-64 Debian host, idempotently and cached:
#   1. host packages: qemu-user, gcc/g++-aarch64-linux-gnu (apt, as root or with sudo)
#   2. an arm64 sysroot with Debian's python3.11, made from .debs with `dpkg-deb -x` through a private
#      apt configuration (APT::Architecture=arm64, empty dpkg status): no root, chroot or binfmt_misc
#   3. aarch64 wheels (apache-tvm, the pinned apache-tvm-ffi, numpy, ...) installed with
#      `pip install --target ROOT_DIR/site`, byte-compiled with the host's CPython 3.11
#   4. ROOT_DIR/bin/python3: a wrapper running the arm64 python under `qemu-aarch64 -L sysroot -0 <wrapper>`,
#      so sys.executable is the wrapper and code that re-executes it (TVM's RPC server) works
#   5. a smoke test: `import tvm` under emulation
#
# Defaults: CACHE_DIR=$SLIMTVM_CACHE/arm-cache, ROOT_DIR=$SLIMTVM_CACHE/aarch64 with
# SLIMTVM_CACHE=~/.cache/slimtvm. Prints the wrapper's path on its last line.
#
# Knobs: HOST_PYTHON (x86 python with pip; default .venv/bin/python, else python3),
#   RUNTIME_ONLY (default 1: delete libtvm_compiler.so from the arm64 site, as on a real board; TVM then
#   loads its runtime only and `import tvm` is ~3x faster; 0 keeps the compiler),
#   SKIP_HOST_APT=1 (you installed the host packages yourself), REFRESH=1 (re-read the arm64 index),
#   DEBIAN_MIRROR, DEBIAN_SECURITY_MIRROR (default: the machine's own apt sources).
# Adapted from shared/reference/arm-emulation (measured there: 46 s cold, ~12-20 s when cached).
set -euo pipefail

SLIMTVM_CACHE="${SLIMTVM_CACHE:-$HOME/.cache/slimtvm}"
CACHE_DIR="${1:-$SLIMTVM_CACHE/arm-cache}"
ROOT_DIR="${2:-$SLIMTVM_CACHE/aarch64}"
mkdir -p "$CACHE_DIR" "$ROOT_DIR"
CACHE_DIR="$(cd "$CACHE_DIR" && pwd)"
ROOT_DIR="$(cd "$ROOT_DIR" && pwd)"

TVM_VERSION="${TVM_VERSION:-0.27.0.post1}"
TVM_FFI_VERSION="${TVM_FFI_VERSION:-0.1.14.post1}"
NUMPY_VERSION="${NUMPY_VERSION:-2.4.6}"
ML_DTYPES_VERSION="${ML_DTYPES_VERSION:-0.6.0}"
TYPING_EXT_VERSION="${TYPING_EXT_VERSION:-4.16.0}"
CLOUDPICKLE_VERSION="${CLOUDPICKLE_VERSION:-3.1.2}"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-$(awk '/^URIs:/{print $2}' /etc/apt/sources.list.d/debian.sources | grep -v security | head -n1)}"
DEBIAN_SECURITY_MIRROR="${DEBIAN_SECURITY_MIRROR:-$(awk '/^URIs:/{print $2}' /etc/apt/sources.list.d/debian.sources | grep security | head -n1)}"
if [ -z "${HOST_PYTHON:-}" ]; then
  if [ -x ./.venv/bin/python ]; then HOST_PYTHON=./.venv/bin/python; else HOST_PYTHON=python3; fi
fi

T0=$(date +%s)
log() { printf '[setup_arm_emulation +%ss] %s\n' "$(( $(date +%s) - T0 ))" "$*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# ---------------------------------------------------------------- 1. host packages
HOST_PKGS="qemu-user gcc-aarch64-linux-gnu g++-aarch64-linux-gnu"
if [ "${SKIP_HOST_APT:-0}" != 1 ]; then
  missing=""
  for p in $HOST_PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
  done
  if [ -n "$missing" ]; then
    log "installing host packages:$missing"
    mkdir -p "$CACHE_DIR/apt-host/partial"
    HOSTAPT=(-o "Dir::Cache::archives=$CACHE_DIR/apt-host/" -o APT::Sandbox::User=root)
    # try from cache / current index first, refresh the index only if that fails
    if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get "${HOSTAPT[@]}" install -y -q --no-install-recommends $missing; then
      as_root apt-get -q update
      as_root env DEBIAN_FRONTEND=noninteractive apt-get "${HOSTAPT[@]}" install -y -q --no-install-recommends $missing
    fi
  else
    log "host packages present: $HOST_PKGS"
  fi
fi
command -v qemu-aarch64 >/dev/null || { echo "qemu-aarch64 not found" >&2; exit 1; }

# ---------------------------------------------------------------- 2. arm64 sysroot
A="$CACHE_DIR/apt-arm64"
mkdir -p "$A/state/lists/partial" "$A/archives/partial" "$A/pkgcache" "$A/parts" "$A/prefs"
[ -f "$A/state/status" ] || : > "$A/state/status"     # empty dpkg status: nothing "installed"
cat > "$A/sources.list.new" <<EOF
deb [arch=arm64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $DEBIAN_MIRROR bookworm main
deb [arch=arm64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $DEBIAN_MIRROR bookworm-updates main
deb [arch=arm64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $DEBIAN_SECURITY_MIRROR bookworm-security main
EOF
if ! cmp -s "$A/sources.list.new" "$A/sources.list" 2>/dev/null; then mv "$A/sources.list.new" "$A/sources.list"; REFRESH=1; else rm "$A/sources.list.new"; fi
ARMAPT=(-o "Dir::State=$A/state" -o "Dir::State::status=$A/state/status"
        -o "Dir::Cache=$A/pkgcache" -o "Dir::Cache::archives=$A/archives/"
        -o "Dir::Etc::SourceList=$A/sources.list" -o "Dir::Etc::SourceParts=$A/parts"
        -o "Dir::Etc::PreferencesParts=$A/prefs" -o "Dir::Etc::Preferences=$A/prefs/none"
        -o APT::Architecture=arm64 -o "APT::Architectures::=arm64"
        -o APT::Sandbox::User=root -o Acquire::Languages=none -q)
ARM_PKGS="python3.11-minimal libpython3.11-stdlib libstdc++6 libgcc-s1"
if [ "${REFRESH:-0}" = 1 ] || ! ls "$A/state/lists/"*_Packages* >/dev/null 2>&1; then
  log "apt-get update (arm64 index, ~9 MB)"
  apt-get "${ARMAPT[@]}" update
fi
if ! apt-get "${ARMAPT[@]}" install -y --no-install-recommends --download-only $ARM_PKGS; then
  log "download failed with the cached index (mirror moved on?); refreshing it"
  apt-get "${ARMAPT[@]}" update
  apt-get "${ARMAPT[@]}" install -y --no-install-recommends --download-only $ARM_PKGS
fi
# exact package set the resolver picks (stale versions left in the cache are ignored)
PKGLIST=$(apt-get "${ARMAPT[@]}" install -s --no-install-recommends $ARM_PKGS | awk '/^Inst /{print $2"_"$3}' | tr -d '(' | sort)
SYSROOT_KEY=$(printf '%s\n' "$PKGLIST" | sha256sum | cut -c1-16)
SYS="$ROOT_DIR/sysroot"
if [ "$(cat "$SYS/.stamp" 2>/dev/null)" != "$SYSROOT_KEY" ]; then
  log "extracting $(printf '%s\n' "$PKGLIST" | wc -l) arm64 debs into $SYS"
  rm -rf "$SYS.tmp"; mkdir -p "$SYS.tmp"
  for pv in $PKGLIST; do
    name=${pv%%_*}; ver=${pv#*_}; ver_enc=${ver//:/%3a}
    f=$(ls "$A/archives/${name}_${ver_enc}_"*.deb 2>/dev/null | head -1)
    [ -n "$f" ] || { echo "missing deb for $name $ver" >&2; exit 1; }
    dpkg-deb -x "$f" "$SYS.tmp"
  done
  # absolute symlinks would resolve against the HOST root under qemu -L; make them relative
  find "$SYS.tmp" -type l -lname '/*' | while read -r l; do
    tgt=$(readlink "$l"); rel=$(realpath -m --relative-to="$(dirname "$l")" "$SYS.tmp$tgt")
    ln -sfn "$rel" "$l"
  done
  # qemu -L falls back to the host path when a file is absent from the sysroot: create the default
  # site dirs so the host's x86 /usr/lib/python3/dist-packages can never leak into sys.path
  mkdir -p "$SYS.tmp/usr/lib/python3/dist-packages" "$SYS.tmp/usr/local/lib/python3.11/dist-packages"
  rm -rf "$SYS"; mv "$SYS.tmp" "$SYS"; echo "$SYSROOT_KEY" > "$SYS/.stamp"
else
  log "sysroot up to date ($SYS)"
fi

# ---------------------------------------------------------------- 3. aarch64 wheels
W="$CACHE_DIR/wheels"; mkdir -p "$W"
REQS="apache-tvm==$TVM_VERSION apache-tvm-ffi==$TVM_FFI_VERSION numpy==$NUMPY_VERSION ml_dtypes==$ML_DTYPES_VERSION typing_extensions==$TYPING_EXT_VERSION cloudpickle==$CLOUDPICKLE_VERSION"
PIPPLAT=(--only-binary=:all: --platform manylinux_2_28_aarch64 --python-version 3.11 --implementation cp)
have_all=1
for r in $REQS; do
  n=${r%%==*}; v=${r#*==}; n=${n//-/_}
  ls "$W/${n}-${v}-"*.whl >/dev/null 2>&1 || have_all=0
done
if [ $have_all = 0 ]; then
  log "pip download aarch64 wheels (~115 MB)"
  "$HOST_PYTHON" -m pip download -q --disable-pip-version-check --no-deps "${PIPPLAT[@]}" -d "$W" $REQS
fi
SITE="$ROOT_DIR/site"
HOST_IS_311=0; "$HOST_PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' && HOST_IS_311=1
NOCOMPILE=(); [ $HOST_IS_311 = 1 ] || NOCOMPILE=(--no-compile)   # other host versions would write useless .pyc
SITE_KEY=$(printf '%s RUNTIME_ONLY=%s\n' "$REQS" "${RUNTIME_ONLY:-1}" | sha256sum | cut -c1-16)
if [ "$(cat "$SITE/.stamp" 2>/dev/null)" != "$SITE_KEY" ]; then
  log "installing wheels into $SITE"
  rm -rf "$SITE.tmp"
  "$HOST_PYTHON" -m pip install -q --disable-pip-version-check --no-deps --no-index "${NOCOMPILE[@]}" \
     --find-links "$W" "${PIPPLAT[@]}" --target "$SITE.tmp" $REQS
  if [ "${RUNTIME_ONLY:-1}" = 1 ]; then rm -f "$SITE.tmp/tvm/lib/libtvm_compiler.so"; fi
  rm -rf "$SITE"; mv "$SITE.tmp" "$SITE"; echo "$SITE_KEY" > "$SITE/.stamp"
else
  log "site-packages up to date ($SITE)"
fi

# ---------------------------------------------------------------- 3b. byte-compile
# The debs' maintainer scripts (py3compile) never ran, and CI shells often export
# PYTHONDONTWRITEBYTECODE=1, so without this every emulated start re-parses the whole stdlib+tvm
# (import tvm: ~24 s instead of ~10 s). .pyc files are arch-independent; any CPython 3.11 will do.
if [ ! -f "$SYS/.pyc_stamp" ] || [ ! -f "$SITE/.pyc_stamp" ]; then
  if [ $HOST_IS_311 = 1 ]; then
    log "byte-compiling stdlib + site with host $HOST_PYTHON"
    PYTHONDONTWRITEBYTECODE= "$HOST_PYTHON" -m compileall -q -j 0 -s "$SYS" -p / "$SYS/usr/lib/python3.11" >/dev/null || true
    PYTHONDONTWRITEBYTECODE= "$HOST_PYTHON" -m compileall -q -j 0 "$SITE" >/dev/null || true
  else
    log "byte-compiling stdlib + site under emulation (host python is not 3.11; slow, one-off)"
    PYTHONDONTWRITEBYTECODE= QEMU_LD_PREFIX="$SYS" qemu-aarch64 -L "$SYS" "$SYS/usr/bin/python3.11" -m compileall -q -s "$SYS" -p / \
      "$SYS/usr/lib/python3.11" "$SITE" >/dev/null || true
  fi
  touch "$SYS/.pyc_stamp" "$SITE/.pyc_stamp"
fi

# ---------------------------------------------------------------- 4. python wrapper
mkdir -p "$ROOT_DIR/bin"
cat > "$ROOT_DIR/bin/python3.tmp" <<'EOF'
#!/bin/sh
# aarch64 python 3.11 under qemu user-mode emulation (generated by setup_arm_emulation.sh).
# `-0 <this wrapper>` makes the guest's argv[0], hence sys.executable, this wrapper, so Python code
# that re-executes sys.executable keeps working without binfmt_misc.
ROOT=$(CDPATH= cd -- "$(dirname -- "$0")/.." && pwd)
SELF="$ROOT/bin/$(basename -- "$0")"
export PYTHONPATH="$ROOT/site${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONNOUSERSITE=1
export QEMU_LD_PREFIX="$ROOT/sysroot"   # for aarch64 children exec'ed directly when binfmt_misc is registered
unset PYTHONHOME
exec "${QEMU_AARCH64:-qemu-aarch64}" -L "$ROOT/sysroot" -0 "$SELF" "$ROOT/sysroot/usr/bin/python3.11" "$@"
EOF
chmod +x "$ROOT_DIR/bin/python3.tmp"; mv "$ROOT_DIR/bin/python3.tmp" "$ROOT_DIR/bin/python3"
ln -sfn python3 "$ROOT_DIR/bin/python"


# ---------------------------------------------------------------- 5. smoke test
log "smoke test (import tvm under qemu-aarch64; ~5-10 s)"
timeout 300 "$ROOT_DIR/bin/python3" -c \
  "import platform, numpy, tvm; assert platform.machine()=='aarch64'; print('aarch64 python', platform.python_version(), 'tvm', tvm.__version__, 'numpy', numpy.__version__)"
log "sizes: sysroot $(du -sh "$SYS" | cut -f1), site $(du -sh "$SITE" | cut -f1), cache $(du -sh "$CACHE_DIR" | cut -f1)"
log "done"
echo "$ROOT_DIR/bin/python3"
