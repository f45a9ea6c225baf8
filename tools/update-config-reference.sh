#!/usr/bin/env bash
# Regenerates the option tables of docs/config-reference.md from the schemas (src/config/args.cpp).
# Usage: tools/update-config-reference.sh [path/to/zlora]   (default: build/bin/zlora)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$root/build/bin/zlora}
doc=$root/docs/config-reference.md
begin='<!-- BEGIN GENERATED: zlora config-reference -->'
end='<!-- END GENERATED -->'
generated=$("$bin" config-reference)
python3 - "$doc" "$begin" "$end" "$generated" <<'PY'
import sys
doc, begin, end, generated = sys.argv[1:]
text = open(doc).read()
b = text.index(begin) + len(begin) + 1
e = text.index(end)
open(doc, "w").write(text[:b] + generated + "\n" + text[e:])
PY
echo "updated $doc"
