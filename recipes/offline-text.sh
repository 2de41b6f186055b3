#!/usr/bin/env bash
# Stage-1 text without the hub: WordNet, GCIDE and English documentation prose from Debian packages
# (bookworm; 343 MB of .deb files, nothing installed, no root needed). Writes OUT_DIR/wordnet.txt
# (1.75M words), OUT_DIR/gcide.txt (3.7M) and OUT_DIR/docs.txt (6.2M): the text of run 18 in docs/lab/runs.md (whose
# docs.txt had 6.8M before near-duplicate paragraphs were dropped).
#
# With --more it also writes OUT_DIR/more.txt: prose from 53 more Debian documentation packages (Django, SQLAlchemy,
# scikit-learn, SageMath, Qt, the JDK, Racket, GHC, LLVM, Erlang, Rust, Apache, GNOME's help...), the Free On-line
# Dictionary of Computing, the Devil's Dictionary, and the descriptions and dialogue of two games' data
# (Cataclysm: DDA, Crawl): 13.3M words, 750 MB more of .deb files, ~5 GB unpacked in a temporary folder, 8 minutes.
#
#   recipes/offline-text.sh corpus [--more]
#   kron run recipes/minilm-19x-gpu.yaml --workspace runs/m19gpu
set -euo pipefail
out=${1:-corpus}
more=${2:-}
[ -z "$more" ] || [ "$more" = --more ] || { echo "usage: $0 OUT_DIR [--more]" >&2; exit 2; }
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
[ "$more" = --more ] || exit 0

# Packages whose documentation is read whole; Sphinx ships each page as HTML and as reST source, so the sources go.
whole=(python-django-doc python-sqlalchemy-doc ruby3.1-doc nodejs-doc cmake-doc sphinx-doc maxima-doc grass-doc
       gnuplot-doc kicad-doc-en zsh-doc r-doc-html postfix-doc exim4-doc-html bind9-doc mercurial-common
       python-scipy-doc python-pandas-doc erlang-doc haskell98-report rust-doc python-sklearn-doc
       python-statsmodels-doc python-astropy-doc twisted-doc python-sympy-doc python-dask-doc python-skimage-doc
       ghc-doc racket-doc openjdk-17-doc qtbase5-doc-html gnome-devel-docs llvm-19-doc ffmpeg-doc csound-doc
       freedombox-doc-en keystone-doc cinder-doc ironic-doc heat-doc octavia-doc pylint-doc numba-doc derby-doc
       ant-doc sagemath-doc db5.3-doc icu-doc bacula-doc cataclysm-dda-data crawl-common)
m=$work/more
mkdir -p "$m"
(cd "$m" && apt-get download -q "${whole[@]}" apache2-doc lilypond-doc-html gnome-user-docs dict-foldoc dict-devil)
for deb in "$m"/*.deb; do
  name=$(basename "$deb"); dpkg -x "$deb" "$m/${name%%_*}"; rm "$deb"
done
find "$m" -type d -name _sources -prune -exec rm -rf {} +
mkdir -p "$m/dict-text"  # dictd databases are gzip-compatible; their entries are indented plain-text paragraphs
zcat "$m/dict-foldoc/usr/share/dictd/foldoc.dict.dz" > "$m/dict-text/foldoc.txt"
zcat "$m/dict-devil/usr/share/dictd/devil.dict.dz" > "$m/dict-text/devil.txt"
lily=$m/lilypond-doc-html/usr/share/doc/lilypond/html/Documentation  # English as one page per manual
python -m kroncli.data.prose "${whole[@]/#/$m/}" "$m/apache2-doc/usr/share/doc/apache2-doc/manual/en" \
  "$m/gnome-user-docs/usr/share/help/C" "$m/dict-text" \
  "$lily"/{learning,notation,usage,essay,extending,changes,contributor,music-glossary,web}-big-page.html "$out/more.txt"
