#!/usr/bin/env bash
# `make slides`: every lesson as an offline reveal.js deck, book/_build/slides/NN_name.slides.html, made from its
# committed outputs. The slide breaks come from the lessons' jupytext sources (slideshow metadata, see
# book/teachers-guide.md). Nothing is loaded from a CDN when a deck is shown: reveal.js and jQuery are packed from the
# npm registry at build time (pinned below, cached in book/_assets_cache/), and so is MathJax 2 (the deck drives it
# through MathJax 2's API); require.js is the book's copy (scripts/fetch_book_assets.sh), plotly.js the installed
# plotly package's. Open
# book/_build/slides/index.html, or a deck, straight from the disk (file://).
# PY may name another Python (default .venv/bin/python); NB may list the notebooks (default every lesson).
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PY:-.venv/bin/python}"
OUT=${SLIDES_OUT:-book/_build/slides}  # beside the built book (ignored by git); tests build elsewhere
CACHE=book/_assets_cache  # shared with the book's tarballs
REVEAL=reveal.js@4.6.0  # nbconvert 7's reveal template is written for reveal.js 4
JQUERY=jquery@3.7.1
MATHJAX2=mathjax@2.7.9  # nbconvert's deck configures and re-renders MathJax through MathJax 2's API (MathJax.Hub)
NB=${NB:-$(ls notebooks/[0-9][0-9]_*.ipynb)}

PY="$PY" bash scripts/fetch_book_assets.sh  # require.js, MathJax and plotly.js, the same files the book serves
BOOK_ASSETS=book/_offline/local
command -v npm >/dev/null || { echo "build_slides: npm is needed (Node.js 18+) to fetch reveal.js" >&2; exit 1; }

mkdir -p "$CACHE" "$OUT/lib"
tarball() {  # the cached tarball of package@version, packed from the npm registry on first use
  local spec=$1 name=${1%@*} version=${1##*@}
  local file="$CACHE/$name-$version.tgz"
  [[ -s "$file" ]] || (cd "$CACHE" && npm pack --silent --loglevel=error "$spec" >/dev/null)
  [[ -s "$file" ]] || { echo "build_slides: npm pack $spec did not produce $file" >&2; exit 1; }
  echo "$file"
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
tar -xzf "$(tarball "$REVEAL")" -C "$tmp" package/dist package/plugin
rm -rf "$OUT/lib/reveal.js" && mkdir -p "$OUT/lib/reveal.js"
mv "$tmp/package/dist" "$tmp/package/plugin" "$OUT/lib/reveal.js/"
rm -rf "$tmp/package"
tar -xzf "$(tarball "$JQUERY")" -C "$tmp" package/dist/jquery.min.js
mv "$tmp/package/dist/jquery.min.js" "$OUT/lib/jquery.min.js"
cp "$BOOK_ASSETS/require.js" "$BOOK_ASSETS/plotly.min.js" "$OUT/lib/"
tar -xzf "$(tarball "$MATHJAX2")" -C "$tmp" package/MathJax.js package/config package/extensions package/jax/input/TeX \
  package/jax/output/CommonHTML package/jax/element package/fonts/HTML-CSS/TeX/woff
rm -rf "$OUT/lib/mathjax" && mv "$tmp/package" "$OUT/lib/mathjax"

# cells the book hides are left out of the deck too; solutions (hide-cell) stay for the teacher's live notebook
"$(dirname "$PY")/jupyter" nbconvert --to slides --output-dir "$OUT" \
  --template-file scripts/slides/deck.html.j2 \
  --SlidesExporter.reveal_url_prefix=lib/reveal.js --SlidesExporter.reveal_theme=white \
  --SlidesExporter.reveal_transition=none \
  --HTMLExporter.require_js_url=lib/require.js --HTMLExporter.jquery_url=lib/jquery.min.js \
  --HTMLExporter.mathjax_url="lib/mathjax/MathJax.js?config=TeX-AMS_CHTML-full,Safe" \
  --TagRemovePreprocessor.enabled=True \
  --TagRemovePreprocessor.remove_cell_tags='["remove-cell", "hide-cell"]' \
  --TagRemovePreprocessor.remove_input_tags='["remove-input"]' \
  --TagRemovePreprocessor.remove_all_outputs_tags='["remove-output"]' \
  $NB

{
  echo '<!doctype html><html><head><meta charset="utf-8"><title>dsv3-mini slides</title></head><body>'
  echo '<h1>dsv3-mini: the lessons as slides</h1><ol>'
  for nb in $NB; do
    stem=$(basename "$nb" .ipynb)
    echo "<li><a href=\"$stem.slides.html\">$stem</a></li>"
  done
  echo '</ol><p>Arrow keys step through a deck; <kbd>s</kbd> opens the speaker notes.</p></body></html>'
} >"$OUT/index.html"
echo "build_slides: $(ls "$OUT"/*.slides.html | wc -l) decks in $OUT/ (open $OUT/index.html)"
