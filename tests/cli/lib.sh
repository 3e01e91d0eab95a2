# Shared by the tools' end-to-end scripts (tests/cli/*.sh): a scratch folder removed on exit,
# and the check / contains helpers that count failures. Source it after setting bin=$1.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fails=0
check() {  # check NAME CONDITION...
  local name=$1; shift
  if "$@"; then echo "ok   $name"; else echo "FAIL $name"; fails=$((fails + 1)); fi
}
contains() { grep -qF -- "$2" "$1"; }
# The last line of every script: the count, and exit 1 if anything failed.
finish() {
  echo "$fails failed"
  exit $((fails > 0))
}
