#!/usr/bin/env bash
# Puts every script the book's pages load into book/_offline/local/ (the build serves it as _static/local/), so that
# no page needs a CDN:
#   - plotly.min.js, copied from the installed plotly package (the same plotly.js the notebooks were made with);
#   - require.js, the ipywidgets HTML manager, anywidget and MathJax 3, from the npm registry with `npm pack`
#     (pinned below; tarballs are kept in book/_assets_cache/ so a rebuild does not download them again).
# Idempotent and quick when nothing changed. `make book` runs it; PY may name another Python (default .venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PY:-.venv/bin/python}"
OUT=book/_offline/local
CACHE=book/_assets_cache
REQUIREJS=requirejs@2.3.8
HTML_MANAGER=@jupyter-widgets/html-manager@1.0.15  # ipywidgets 8 embeds html-manager ^1.0
MATHJAX=mathjax@3.2.2

plotly_js=$("$PY" -c 'import pathlib, plotly; print(pathlib.Path(plotly.__file__).parent / "package_data" / "plotly.min.js")')
# the anywidget front end matching the installed Python package; widget state names it by the range ~MAJOR.MINOR.*
anywidget_version=$("$PY" -c 'import importlib.metadata as m; print(m.version("anywidget"))')
anywidget_range="~$(cut -d. -f1-2 <<<"$anywidget_version").*"
ANYWIDGET="anywidget@$anywidget_version"

stamp="plotly.js $(wc -c <"$plotly_js") $REQUIREJS $HTML_MANAGER $ANYWIDGET $MATHJAX"
if [[ -f "$OUT/.stamp" && "$(cat "$OUT/.stamp")" == "$stamp" ]]; then
  exit 0
fi
command -v npm >/dev/null || { echo "fetch_book_assets: npm is needed (Node.js 18+) to fetch the book's JavaScript" >&2; exit 1; }

mkdir -p "$CACHE"
tarball() {  # the cached tarball of package@version, packed from the npm registry on first use
  local spec=$1 name version file
  name=${spec%@*}; version=${spec##*@}
  file="$CACHE/$(tr -d @ <<<"${name//\//-}")-$version.tgz"
  if [[ ! -s "$file" ]]; then
    (cd "$CACHE" && npm pack --silent --loglevel=error "$spec" >/dev/null)
  fi
  [[ -s "$file" ]] || { echo "fetch_book_assets: npm pack $spec did not produce $file" >&2; exit 1; }
  echo "$file"
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
new="$tmp/local"
mkdir -p "$new/html-manager" "$new/mathjax" "$new/npm/anywidget@$anywidget_range/dist"

cp "$plotly_js" "$new/plotly.min.js"

tar -xzf "$(tarball "$REQUIREJS")" -C "$tmp" package/require.js
mv "$tmp/package/require.js" "$new/require.js"
rm -rf "$tmp/package"

# embed-amd.js (self-contained) and the fonts and images it references; no source maps, no other bundles
tar -xzf "$(tarball "$HTML_MANAGER")" -C "$tmp" package/dist
rm -f "$tmp"/package/dist/*.map "$tmp"/package/dist/{embed.js,embed.js.LICENSE.txt,libembed-amd.js}
mv "$tmp"/package/dist/* "$new/html-manager/"
rm -rf "$tmp/package"

# where the HTML manager looks for a third-party widget module: <cdn>/<name>@<range>/dist/index.js
tar -xzf "$(tarball "$ANYWIDGET")" -C "$tmp" package/dist/index.js
mv "$tmp/package/dist/index.js" "$new/npm/anywidget@$anywidget_range/dist/index.js"
rm -rf "$tmp/package"

# MathJax 3: the combined TeX/MathML + CHTML component, the components it loads on demand, and its fonts
tar -xzf "$(tarball "$MATHJAX")" -C "$tmp" package/es5
for part in tex-mml-chtml.js input output a11y ui adaptors sre; do
  mv "$tmp/package/es5/$part" "$new/mathjax/"
done
rm -rf "$tmp/package"

echo "$stamp" >"$new/.stamp"
rm -rf "$OUT"
mkdir -p "$(dirname "$OUT")"
mv "$new" "$OUT"
echo "fetch_book_assets: $OUT is ready ($(du -sh "$OUT" | cut -f1))"
