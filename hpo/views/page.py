"""Plotly figures in a self-contained HTML page with one copy of plotly.js, packed.

plotly.js is 4.8 MB of the 4.9 MB a report used to weigh, whatever the number of trials.
Gzipped and in base64 it is 1.9 MB; the browser unpacks it with ``DecompressionStream``
(Chrome 80, Firefox 113, Safari 16.4 and later) and then draws every figure from the JSON
beside its div. The page still needs nothing from outside, so a report opened from the
study's artifacts or mailed on draws the same.
"""

from __future__ import annotations

import base64
import functools
import gzip

DEFAULT_HEIGHT = 440


def figure_div(div_id: str, fig) -> str:
    """A figure's place on the page, with its data beside it for ``scripts`` to draw."""
    height = int(fig.layout.height or DEFAULT_HEIGHT)
    data = fig.to_json().replace("</", "<\\/")  # nothing in it may close the script element
    return (
        f'<div class="figure"><div id="{div_id}" class="plotly-graph-div" '
        f'style="height:{height}px;width:100%"></div>'
        f'<script type="application/json" data-plot="{div_id}">{data}</script></div>'
    )


@functools.lru_cache(maxsize=1)
def packed_plotly() -> str:
    """plotly.js, gzipped and in base64."""
    from plotly.offline import get_plotlyjs

    return base64.b64encode(gzip.compress(get_plotlyjs().encode(), 9, mtime=0)).decode()


# Unpacks plotly.js, runs it, then draws every figure from its JSON.
_DRAW = """(async () => {
  const plots = [...document.querySelectorAll('script[data-plot]')];
  if (!window.DecompressionStream) {
    for (const p of plots) document.getElementById(p.dataset.plot).textContent =
      'This browser cannot unpack the figures (it lacks DecompressionStream; Chrome 80, ' +
      'Firefox 113 and Safari 16.4 have it).';
    return;
  }
  const packed = Uint8Array.from(atob(document.getElementById('plotly-gz').textContent),
    c => c.charCodeAt(0));
  const stream = new Blob([packed]).stream().pipeThrough(new DecompressionStream('gzip'));
  const code = document.createElement('script');
  code.text = await new Response(stream).text();
  document.head.appendChild(code);
  for (const p of plots) {
    const fig = JSON.parse(p.textContent);
    Plotly.newPlot(p.dataset.plot, fig.data, fig.layout, {responsive: true});
  }
})();"""


def scripts() -> str:
    """The end of the page's body: plotly.js packed, and the script that draws the figures."""
    return (
        f'<script type="text/plain" id="plotly-gz">{packed_plotly()}</script>\n'
        f"<script>{_DRAW}</script>\n"
    )


__all__ = ["figure_div", "packed_plotly", "scripts"]
