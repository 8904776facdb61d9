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

ensure_venv() {  # ensure_venv DIR PYTHON "pip requirement args..."
  local dir=$1 python=$2 reqs=$3 stamp
  stamp=$(cat pyproject.toml; echo "$python $reqs")
  stamp=$(printf '%s' "$stamp" | sha1sum | cut -c1-16)
  if [ ! -x "$dir/bin/python" ] || [ "$(cat "$dir/.stamp" 2>/dev/null)" != "$stamp" ]; then
    echo "==> preparing $dir ($("$python" --version 2>&1); $reqs)"
    "$python" -m venv "$dir"
    "$dir/bin/python" -m pip install -q --disable-pip-version-check -U pip
    # shellcheck disable=SC2086
    "$dir/bin/python" -m pip install -q --disable-pip-version-check $reqs
    echo "$stamp" > "$dir/.stamp"
  fi
}
