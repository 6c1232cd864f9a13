#!/usr/bin/env bash
# The bash completion offers every option --help shows, and completes
# subcommands and option values.
#   completion-test.sh BUILD_DIR SOURCE_DIR
set -o pipefail  # no -e/-u: completion functions run without them in a shell
build=$1 src=$2
status=0
complete_line() {  # the words bash would offer for the command line "$@" (last word being typed)
  COMP_WORDS=("$@")
  COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
  COMPREPLY=()
  "$completer"
  echo "${COMPREPLY[*]}"
}
expect() {  # expect "WORDS OFFERED" COMMAND LINE...
  local want=$1
  shift
  local got
  got=$(complete_line "$@")
  if [ "$got" != "$want" ]; then
    echo "FAIL: '$*' completes to '$got', expected '$want'"
    status=1
  fi
}

# shellcheck source=/dev/null
source "$src/packaging/completion/sendense-restorefs"
completer=_sendense_restorefs
for opt in $("$build/sendense-restorefs" --help | grep -oE '(^|[][ ,|])--?[a-z][a-z-]*' | sed 's/^[][ ,|]*//' | LC_ALL=C sort -u); do
  offered=$(complete_line sendense-restorefs "$opt")
  grep -qw -- "$opt" <<<"$offered" || { echo "FAIL: sendense-restorefs $opt is not completed"; status=1; }
done
expect "--attach" sendense-restorefs --att
expect "userspace kernel auto" sendense-restorefs --attach ""
expect "debug" sendense-restorefs --log-level d

# shellcheck source=/dev/null
source "$src/packaging/completion/sendense-restore"
completer=_sendense_restore
expect "catalog" sendense-restore cat
expect "import add list remove" sendense-restore catalog ""
expect "add assign unassign list remove" sendense-restore tenant ""
expect "samba ganesha" sendense-restore export ""
expect "create list revoke" sendense-restore token ""
expect "--mountpoint --config --json --catalog" sendense-restore attach b1 --
expect "--tenant --catalog" sendense-restore catalog import --
expect "--vm" sendense-restore tenant assign acme --v
expect "qcow2 raw vmdk vhdx" sendense-restore inspect x.img --format ""
expect "--json --catalog" sendense-restore status --
expect "--worker-memory --config --json" sendense-restore sandbox-check --
expect "--version" sendense-restore --v
for opt in $("$build/sendense-restore" --help | grep -oE '(^|[][ ,|])--[a-z][a-z-]*' | sed 's/^[][ ,|]*//' | LC_ALL=C sort -u); do
  found=0
  for line in "catalog add" "catalog list" "catalog import" "tenant add" "tenant assign" "tenant list" \
              "export samba" "export ganesha" "token create" "token list" "attach" "sandbox-check" "status" "inspect" ""; do
    # shellcheck disable=SC2086
    offered=$(complete_line sendense-restore $line "--")
    grep -qw -- "$opt" <<<"$offered" && found=1
  done
  [ "$opt" = --help ] && found=1  # offered at the first word
  [ $found = 1 ] || { echo "FAIL: sendense-restore $opt is not completed"; status=1; }
done
[ $status = 0 ] && echo "completion: ok"
exit $status
