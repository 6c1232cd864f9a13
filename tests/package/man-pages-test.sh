#!/usr/bin/env bash
# Every option the binaries' --help shows appears in their man page, so the
# pages cannot fall behind the code unnoticed.
#   man-pages-test.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$1 src=$2
status=0
for bin in sendense-restorefs sendense-restore sendense-restore-web; do
  page="$src/packaging/man/$bin.8"
  # The page as text: roff's \- is a plain hyphen.
  text=$(sed 's/\\-/-/g' "$page")
  options=$("$build/$bin" --help | grep -oE '(^|[][ ,|])--?[a-z][a-z-]*' | sed 's/^[][ ,|]*//' | LC_ALL=C sort -u)
  [ -n "$options" ] || { echo "FAIL: no options found in $bin --help"; exit 1; }
  for opt in $options; do
    if ! grep -qE -- "(^|[^a-z-])$opt([^a-z-]|\$)" <<<"$text"; then
      echo "FAIL: $bin --help shows $opt, $page does not"
      status=1
    fi
  done
  echo "$bin: $(wc -w <<<"$options") options checked"
done
exit $status
