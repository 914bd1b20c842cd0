#!/usr/bin/env bash
# Install from wheels only, with no C/C++ compiler on PATH: the check behind the README's promise.
#
#   bash benchmarks/check_install.sh                    # python3.11 python3.12 python3.13
#   bash benchmarks/check_install.sh python3.12         # the interpreters given
#   PLATFORMS=1 bash benchmarks/check_install.sh        # also resolve wheels for other platforms
#
# For each interpreter: a fresh venv, PATH = every tool of the usual bin dirs except compilers,
# `pip install --only-binary=:all: <this checkout>` (no cache, no local wheel dir), then a describe
# and `neardup --help`. PLATFORMS=1 adds, per Python version, a metadata-only resolution
# (`pip install --dry-run --only-binary=:all: --platform ...`) for Linux x86_64/aarch64, musl,
# macOS and Windows. Writes everything under a temp dir; prints one line per check.
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
nocc=$work/bin
mkdir -p "$nocc"
for d in /usr/local/sbin /usr/local/bin /usr/sbin /usr/bin /sbin /bin; do
  for f in "$d"/*; do
    b=$(basename "$f")
    case "$b" in
      cc | c++ | gcc | g++ | cpp | clang* | *-gcc | *-gcc-[0-9]* | *-g++ | *-g++-[0-9]* | gcc-[0-9]* | g++-[0-9]* | *-cc | *-c++ | c89* | c99* | tcc | icc | icx) continue ;;
    esac
    [ -e "$nocc/$b" ] || ln -s "$f" "$nocc/$b"
  done
done
pythons=("$@")
[ ${#pythons[@]} -gt 0 ] || pythons=(python3.11 python3.12 python3.13)
for py in "${pythons[@]}"; do
  exe=""
  # The real interpreter, not a launcher (a pyenv shim needs pyenv itself on PATH).
  exe=$("$py" -c 'import sys; print(sys.executable)' 2>/dev/null) ||
    exe=$(ls "${PYENV_ROOT:-$HOME/.pyenv}"/versions/*/bin/"$py" 2>/dev/null | tail -1)
  [ -n "$exe" ] || { echo "$py: not found, skipped"; continue; }
  ln -sf "$exe" "$nocc/$py"
done
git -C "$root" archive HEAD | tar x -C "$work" --one-top-level=src  # the committed tree only
export PATH=$nocc PIP_FIND_LINKS= PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
for c in cc gcc g++ c++ clang; do command -v $c >/dev/null && echo "a compiler is still on PATH: $c" && exit 1; done
status=0
for py in "${pythons[@]}"; do
  [ -e "$nocc/$py" ] || continue
  venv=$work/venv-$py
  log=$work/$py.log
  if "$py" -m venv "$venv" >"$log" 2>&1 && "$venv/bin/pip" install --only-binary=:all: "$work/src" >>"$log" 2>&1 &&
    (cd "$work" && "$venv/bin/python" -c "
from PIL import Image
from common import pipeline
sigs = pipeline.describe(Image.radial_gradient('L').convert('RGB'))
assert len(sigs[pipeline.PDQ]) == 33
" >>"$log" 2>&1) && "$venv/bin/neardup" --help >/dev/null 2>>"$log"; then
    echo "$py: installed from wheels with no compiler on PATH; describe and neardup --help work"
  else
    status=1
    echo "$py: FAILED"
    grep -v "^WARNING" "$log" | tail -5
  fi
done
vpy=$(ls -d "$work"/venv-*/bin/python 2>/dev/null | head -1)
if [ "${PLATFORMS:-0}" = 1 ] && [ -n "$vpy" ]; then
  declare -A plat=(
    [linux_x86_64]="manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux_2_27_x86_64 manylinux_2_28_x86_64 manylinux_2_12_x86_64 manylinux2010_x86_64 manylinux_2_5_x86_64 manylinux1_x86_64"
    [linux_aarch64]="manylinux_2_17_aarch64 manylinux2014_aarch64 manylinux_2_27_aarch64 manylinux_2_28_aarch64"
    [musllinux_x86_64]="musllinux_1_1_x86_64 musllinux_1_2_x86_64"
    [macos_arm64]="macosx_14_0_arm64"
    [macos_x86_64]="macosx_13_0_x86_64"
    [windows_amd64]="win_amd64"
  )
  declare -A markers=(
    [linux_x86_64]="linux x86_64" [linux_aarch64]="linux aarch64" [musllinux_x86_64]="linux x86_64"
    [macos_arm64]="darwin arm64" [macos_x86_64]="darwin x86_64" [windows_amd64]="win32 AMD64"
  )
  for v in 3.11 3.12 3.13; do
    for p in linux_x86_64 linux_aarch64 musllinux_x86_64 macos_arm64 macos_x86_64 windows_amd64; do
      # pip --platform does not change sys_platform / platform_machine markers: evaluate them here.
      read -r sysp mach <<<"${markers[$p]}"
      "$vpy" - "$work/src/pyproject.toml" "$sysp" "$mach" "$v" >"$work/reqs.txt" <<'PY'
import sys, tomllib
from packaging.requirements import Requirement
path, sysp, mach, ver = sys.argv[1:]
env = {"sys_platform": sysp, "platform_machine": mach, "python_version": ver, "platform_system": ""}
for dep in tomllib.load(open(path, "rb"))["project"]["dependencies"]:
    req = Requirement(dep)
    if req.marker is None or req.marker.evaluate(env):
        req.marker = None
        print(req)
PY
      args=()
      for t in ${plat[$p]}; do args+=(--platform "$t"); done
      if out=$("$vpy" -m pip install --dry-run --ignore-installed --only-binary=:all: --python-version "$v" \
        --implementation cp "${args[@]}" --target "$work/dry" -r "$work/reqs.txt" 2>&1); then
        echo "Python $v $p: every dependency has a wheel"
      else
        echo "Python $v $p: $(echo "$out" | grep -m1 -oE 'requirement [^ ]+') has no wheel"
      fi
    done
  done
fi
exit $status
