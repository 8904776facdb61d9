# Shared by scripts/test and scripts/example: find an interpreter, make a venv that
# matches pyproject.toml (reinstalled when pyproject.toml or the pins change).

find_python() {  # find_python 3.13 -> prints a command that runs that Python
  local version=$1 candidate
  for candidate in "python$version" "python3"; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c "import sys; sys.exit(sys.version_info[:2] != tuple(map(int, '$version'.split('.'))))" 2>/dev/null; then
      command -v "$candidate"; return 0
    fi
  done
  if command -v pyenv >/dev/null 2>&1; then
    local found
    found=$(pyenv versions --bare 2>/dev/null | grep -E "^$version(\.[0-9]+)?$" | sort -V | tail -n 1)
    if [ -n "$found" ]; then
      echo "$(pyenv root)/versions/$found/bin/python$version"; return 0
    fi
  fi
  echo "error: Python $version not found (install it, e.g. 'pyenv install $version')" >&2
  return 1
}

ensure_venv() {  # ensure_venv DIR PYTHON "pip requirement args..." [CONSTRAINTS_FILE]
  local dir=$1 python=$2 reqs=$3 constraints=${4:-} stamp
  stamp=$(cat pyproject.toml; echo "$python $reqs"; [ -z "$constraints" ] || cat "$constraints")
  stamp=$(printf '%s' "$stamp" | sha1sum | cut -c1-16)
  if [ ! -x "$dir/bin/python" ] || [ "$(cat "$dir/.stamp" 2>/dev/null)" != "$stamp" ]; then
    echo "==> preparing $dir ($("$python" --version 2>&1); $reqs${constraints:+ -c $constraints})"
    rm -f "$dir/.stamp"
    "$python" -m venv --clear "$dir"
    "$dir/bin/python" -m pip install -q --disable-pip-version-check -U pip
    # shellcheck disable=SC2086
    "$dir/bin/python" -m pip install -q --disable-pip-version-check $reqs ${constraints:+-c "$constraints"}
    echo "$stamp" > "$dir/.stamp"
  fi
}

floor_constraints() {  # floor_constraints PYTHON FILE EXTRA... -> FILE pins pyproject's floors
  local python=$1 file=$2; shift 2
  mkdir -p "$(dirname "$file")"
  "$python" scripts/_floors.py "$@" > "$file.tmp" && mv "$file.tmp" "$file"
}

show_versions() {  # show_versions PYTHON -> one line: the installed servers and libraries
  "$1" - <<'PY'
import importlib.metadata as m
names = ["django", "asgiref", "channels", "channels-redis", "psycopg", "uvicorn", "hypercorn",
         "granian", "daphne", "twisted", "gunicorn", "uvicorn-worker", "pytest"]
def version(name):
    try:
        return m.version(name)
    except m.PackageNotFoundError:
        return "-"
print(", ".join(f"{name} {version(name)}" for name in names))
PY
}

#: The balancers the real-server tests put in front of the servers (tests/test_balancers.py),
#: as Debian packages: the program each one's package installs.
BALANCER_PACKAGES="nginx haproxy"

ensure_balancers() {  # install nginx and HAProxy where they are missing and apt-get can
  local missing=() package
  for package in $BALANCER_PACKAGES; do
    command -v "$package" >/dev/null 2>&1 || [ -x "/usr/sbin/$package" ] || missing+=("$package")
  done
  [ ${#missing[@]} -gt 0 ] || return 0
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "==> not installing ${missing[*]} (needs apt-get as root): the balancer tests skip"
    return 0
  fi
  echo "==> installing ${missing[*]} (apt-get; their system services are not started)"
  # The tests run their own instances: keep the packages' services from starting now
  # (policy-rc.d answers 101, "not allowed", to invoke-rc.d) and from starting at boot.
  local policy=/usr/sbin/policy-rc.d added=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && added=yes
  fi
  local status=0
  { DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" ||
    { apt-get update -q && DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "${missing[@]}"; }; } >/dev/null || status=$?
  [ -z "$added" ] || rm -f "$policy"
  for package in "${missing[@]}"; do
    if command -v systemctl >/dev/null 2>&1; then
      systemctl disable --now "$package" >/dev/null 2>&1 || true
    fi
    command -v service >/dev/null 2>&1 && service "$package" stop >/dev/null 2>&1 || true
  done
  [ $status = 0 ] || echo "==> apt-get could not install ${missing[*]}: the balancer tests skip"
}
