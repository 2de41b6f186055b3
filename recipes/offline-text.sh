#!/usr/bin/env bash
# Stage-1 text without the hub: WordNet, GCIDE and English documentation prose from Debian packages
# (bookworm; 343 MB of .deb files, nothing installed, no root needed). Writes OUT_DIR/wordnet.txt
# (1.75M words), OUT_DIR/gcide.txt (3.7M) and OUT_DIR/docs.txt (6.8M): the text of run 18 in docs/results.md.
#
#   recipes/offline-text.sh corpus
#   kron run recipes/minilm-19x-gpu.yaml --workspace runs/m19gpu
set -euo pipefail
out=${1:-corpus}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
docs=(python3.11-doc perl-doc postgresql-doc-15 sqlite3-doc git-doc vim-runtime octave-doc gimp-help-en
      libreoffice-help-en-us debian-handbook debian-reference-en debian-faq gnu-standards gnucash-docs jargon-text
      fortunes linux-doc-6.1)
(cd "$work" && apt-get download -q wordnet-base dict-gcide "${docs[@]}")
for deb in "$work"/*.deb; do
  name=$(basename "$deb"); dpkg -x "$deb" "$work/${name%%_*}"
done
mkdir -p "$out"
python -m kroncli.data.wordnet "$work/wordnet-base/usr/share/wordnet" "$out/wordnet.txt"
python -m kroncli.data.gcide "$work/dict-gcide/usr/share/dictd" "$out/gcide.txt"
d=$work
python -m kroncli.data.prose "$d/python3.11-doc/usr/share/doc/python3.11/html/_sources" "$d/perl-doc" \
  "$d/postgresql-doc-15" "$d/sqlite3-doc" "$d/git-doc" "$d/vim-runtime/usr/share/vim/vim90/doc" "$d/octave-doc" \
  "$d/gimp-help-en/usr/share/gimp/2.0/help/en" "$d/libreoffice-help-en-us" \
  "$d/debian-handbook/usr/share/doc/debian-handbook/html/en-US" "$d/debian-reference-en" "$d/debian-faq" \
  "$d/gnu-standards" "$d/gnucash-docs/usr/share/doc/gnucash-docs/gnucash-guide-en" \
  "$d/gnucash-docs/usr/share/doc/gnucash-docs/gnucash-help-en" "$d/jargon-text" "$d/fortunes" \
  "$d/linux-doc-6.1/usr/share/doc/linux-doc-6.1" "$out/docs.txt"
