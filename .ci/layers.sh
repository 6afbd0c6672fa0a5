#!/usr/bin/env bash
# Layers: the store and delivery know nothing of HTTP serving, and config and the domain know
# none of the parts built on them. Fails on a direct reference (a `use` or a path, outside
# comments) that breaks this, and prints it.
set -euo pipefail
cd "$(dirname "$0")/.."

# Prints the lines of the files under $1… that match $pattern, leaving out comments.
offending() {
  local pattern=$1
  shift
  local paths=()
  for path in "$@"; do
    [[ -e $path ]] && paths+=("$path")
  done
  ((${#paths[@]})) || return 0
  grep -rnHE --include='*.rs' "$pattern" "${paths[@]}" | grep -vE '^[^:]+:[0-9]+:[[:space:]]*//' || true
}

failed=0
check() {
  local rule=$1 found
  found=$(offending "${@:2}")
  if [[ -n $found ]]; then
    echo "layers: $rule" >&2
    echo "$found" >&2
    failed=1
  fi
}

check "src/store and src/delivery must not use the HTTP server stack (axum, tower, hyper) or crate::http" \
  '\b(axum|tower|tower_http|hyper|hyper_util)::|\b(crate|super)(::super)*::(\{[^}]*\b)?http\b' \
  src/store src/delivery
check "src/config.rs and src/domain* must not use crate::auth, crate::delivery, crate::store or crate::http" \
  '\b(crate|super)::(\{[^}]*\b)?(auth|delivery|store|http)\b' \
  src/config.rs src/domain.rs src/domain

if ((failed)); then
  exit 1
fi
echo "layers ok"
