// MathJax 3 (bundled, SVG output: no web fonts, so it also works from file://).
// Typesets only the math containers: pymdownx.arithmatex's \(...\) and \[...\] spans and the
// notebooks' markdown cells, whose $...$ and $$...$$ mkdocs-jupyter keeps as written. A `$`
// anywhere else on a page (prose, API docstrings) stays a dollar sign.
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"], ["$", "$"]],
    displayMath: [["\\[", "\\]"], ["$$", "$$"]],
    processEscapes: true,
    processEnvironments: true,
  },
  svg: {fontCache: "global"},
  startup: {typeset: false},
};
const MATH_CONTAINERS = ".arithmatex, .jp-RenderedMarkdown";
document$.subscribe(() => {
  const typeset = () => window.MathJax.typesetPromise(Array.from(document.querySelectorAll(MATH_CONTAINERS)));
  if (window.MathJax.startup && window.MathJax.startup.promise) {
    window.MathJax.startup.promise.then(typeset);
  }
});
