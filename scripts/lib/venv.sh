# Sourced by scripts/run and scripts/test: ensure_venv [EXTRAS] makes .venv (Python >= 3.11) and
# installs the project editable, again only when pyproject.toml or the extras asked for change.

ensure_venv() {
  local extras=${1:-}
  if [[ ! -x .venv/bin/python ]]; then
    local python=${PYTHON:-python3}
    if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
      echo "scripts: Python >= 3.11 is required (${python} is $("$python" -V 2>&1))" >&2
      exit 1
    fi
    "$python" -m venv .venv
  fi
  local stamp=.venv/.runlane-installed hash installed_hash installed_extras
  hash=$(.venv/bin/python -c \
    'import hashlib; print(hashlib.sha256(open("pyproject.toml", "rb").read()).hexdigest())')
  installed_hash="" installed_extras=""
  [[ -f $stamp ]] && read -r installed_hash installed_extras < "$stamp"
  # An install with the test extra also serves scripts/run; a plain one does not serve tests.
  if [[ $installed_hash == "$hash" && ( -z $extras || $installed_extras == "$extras" ) ]]; then
    return
  fi
  local target=.
  [[ -n $extras ]] && target=".[$extras]"
  echo "scripts: installing $target into .venv" >&2
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e "$target"
  echo "$hash $extras" > "$stamp"
}
